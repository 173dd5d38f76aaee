"""Tests of mmedge.datasets: reference datasets (digits-av, digits-match) and JSONL loading."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import soundfile as sf

from mmedge.datasets import (
    CAPTION_CLUES, DigitsAVConfig, build_dataset, caption_classes, dataset_digest, list_datasets, load_jsonl,
)
from mmedge.datasets.base import MultimodalDataset
from mmedge.datasets.digits_av import mix_at_snr
from mmedge.datasets.digits_match import CONFUSABLE, KIND_HARD, KIND_MATCH, KIND_RANDOM, DigitsMatchConfig
from mmedge.errors import DataError, RegistryError


@pytest.fixture(scope="session")
def av(tmp_path_factory) -> MultimodalDataset:
    return build_dataset("digits-av", seed=0, cache_dir=tmp_path_factory.mktemp("cache_av"))


@pytest.fixture(scope="session")
def match(tmp_path_factory) -> MultimodalDataset:
    return build_dataset("digits-match", seed=0, cache_dir=tmp_path_factory.mktemp("cache_match"))


# ----------------------------------------------------------------------------- registry


def test_registry_lists_and_rejects_unknown():
    assert {"digits-av", "digits-match"} <= set(list_datasets())
    with pytest.raises(RegistryError, match="digits-av"):
        build_dataset("no-such-set")


# ----------------------------------------------------------------------------- determinism / cache


@pytest.mark.parametrize("name", ["digits-av", "digits-match"])
def test_fresh_builds_are_byte_identical(name, av, match, tmp_path):
    first = av if name == "digits-av" else match
    again = build_dataset(name, seed=0, cache_dir=tmp_path / "fresh")
    assert dataset_digest(again) == dataset_digest(first)
    cached = build_dataset(name, seed=0, cache_dir=tmp_path / "fresh")  # from the .npz cache
    assert dataset_digest(cached) == dataset_digest(first)
    assert list((tmp_path / "fresh" / "datasets").glob("*.npz"))


def test_other_seed_differs(match, tmp_path):
    other = build_dataset("digits-match", seed=1, cache_dir=tmp_path)
    assert dataset_digest(other) != dataset_digest(match)


# ----------------------------------------------------------------------------- splits


@pytest.mark.parametrize("which", ["av", "match"])
def test_splits_disjoint_cover_and_group_by_source(which, request):
    ds = request.getfixturevalue(which)
    parts = [ds.splits[s] for s in ("train", "val", "test")]
    all_rows = np.concatenate(parts)
    assert len(all_rows) == len(ds) == len(np.unique(all_rows))
    sources = [set(ds.meta["source"][p].tolist()) for p in parts]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    per_image = DigitsAVConfig().variants_per_image if which == "av" else DigitsMatchConfig().pairs_per_image
    assert len(ds) == per_image * 1797


@pytest.mark.parametrize("which", ["av", "match"])
def test_splits_stratified_60_20_20(which, request):
    ds = request.getfixturevalue(which)
    digit = ds.meta["digit"] if "digit" in ds.meta else ds.y
    for name, frac in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        rows = ds.splits[name]
        assert abs(len(rows) / len(ds) - frac) < 0.01
        per_class = np.bincount(digit[rows], minlength=10) / np.bincount(digit, minlength=10)
        assert np.all(np.abs(per_class - frac) < 0.02), (name, per_class)


def test_split_and_subset(av):
    train = av.split("train")
    assert len(train) == len(av.splits["train"])
    assert np.array_equal(train.splits["train"], np.arange(len(train)))
    assert len(train.splits["test"]) == 0
    sub = av.subset([0, 5, 7])
    assert sub.texts == [av.texts[i] for i in (0, 5, 7)]
    assert np.array_equal(sub.images[1], av.images[5])
    with pytest.raises(DataError, match="valid splits: train, val, test"):
        av.split("dev")


@pytest.mark.parametrize("which", ["av", "match"])
def test_default_calibration_sets_are_todays_training_rows(which, request):
    """``calibration_data/<dataset>`` (``make_default.py``) holds rows of the reference dataset as it is built
    now, from its training split: a set left from an earlier version of the dataset calibrates int8 on
    other images (it cost the reference image encoder 0.9967 -> 0.9948 min cosine)."""
    from mmedge.export.calibration_reader import DEFAULT_DIR

    ds = request.getfixturevalue(which)
    folder = DEFAULT_DIR / ds.name
    rows = [json.loads(line) for line in (folder / "calib.jsonl").read_text().splitlines()]
    train = set(np.asarray(ds.splits["train"]).tolist())
    assert rows and len(list(folder.glob("*.png"))) == len(rows)  # no stale files beside them
    for row in rows:
        i = int(row["image"].split(".")[0])
        assert i in train and row["label"] == ds.labels[int(ds.y[i])] and row["text"] == ds.texts[i]
        image = cv2.cvtColor(cv2.imread(str(folder / row["image"])), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(image, np.asarray(ds.images[i]))
        if "audio" in row:
            clip, _ = sf.read(str(folder / row["audio"]), dtype="float32")
            np.testing.assert_allclose(clip, np.asarray(ds.audio[i]), atol=1 / 32767)


# ----------------------------------------------------------------------------- digits-av


def test_digits_av_shapes_dtypes(av):
    assert av.task == "classification" and av.labels[0] == "zero" and av.labels[9] == "nine"
    assert av.modalities == ("image", "text", "audio")
    n = 1797 * DigitsAVConfig().variants_per_image
    assert av.images.shape == (n, 32, 32, 3) and av.images.dtype == np.uint8
    assert av.audio.shape == (n, 16000) and av.audio.dtype == np.float32
    assert av.y.dtype == np.int64 and av.audio_rate == 16000
    assert all(v.dtype == np.int64 for v in av.splits.values())
    assert np.bincount(av.y).min() > 300


def test_captions_true_and_partial(av):
    assert all(2 <= len(s) <= 5 for s in CAPTION_CLUES.values())
    for text, label in zip(av.texts, av.y):
        classes = caption_classes(text)
        assert label in classes, (text, label)
        assert 2 <= len(classes) <= 5
    assert len(set(av.texts)) > 100  # varied wording


def test_audio_not_silent_and_snr_in_range(av):
    cfg = DigitsAVConfig()
    rms = np.sqrt(np.mean(av.audio.astype(np.float64) ** 2, axis=1))
    assert np.isfinite(av.audio).all() and rms.min() > 0.01
    assert np.abs(av.audio).max() <= 1.0
    snr = av.meta["snr_db"]
    assert snr.min() >= cfg.snr_db_range[0] and snr.max() <= cfg.snr_db_range[1]


def test_test_voices_unseen_in_train(av):
    clips = {s: set(av.meta["clip"][av.splits[s]].tolist()) for s in ("train", "val", "test")}
    assert not (clips["train"] & clips["test"]) and not (clips["train"] & clips["val"])
    assert not (clips["val"] & clips["test"])


def test_mix_at_snr_realises_the_snr():
    speech = (0.5 * np.sin(np.arange(8000) * 0.3)).astype(np.float32)
    for snr_db in (-8.0, 0.0, 4.0):
        mixed = mix_at_snr(speech, 1000, 16000, snr_db, np.random.default_rng(1), normalize=False)
        noise = mixed.astype(np.float64)
        noise[1000:9000] -= speech
        measured = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise**2))
        assert abs(measured - snr_db) < 0.01
        scaled = mix_at_snr(speech, 1000, 16000, snr_db, np.random.default_rng(1))
        assert 0.3 <= np.abs(scaled).max() <= 0.9 and scaled.dtype == np.float32


# ----------------------------------------------------------------------------- digits-match


def test_digits_match_balance_and_negatives(match):
    assert match.task == "matching" and match.labels == ("no_match", "match")
    assert match.modalities == ("image", "text")
    assert match.images.shape == (1797 * DigitsMatchConfig().pairs_per_image, 32, 32, 3) and match.images.dtype == np.uint8
    assert 0.45 < match.y.mean() < 0.55
    kind, digit, named = match.meta["kind"], match.meta["digit"], match.meta["named"]
    assert np.array_equal(match.y == 1, kind == KIND_MATCH)
    assert np.array_equal(named == digit, kind == KIND_MATCH)
    hard = kind == KIND_HARD
    assert 0.2 < hard.mean() < 0.3 and 0.2 < (kind == KIND_RANDOM).mean() < 0.3
    assert all(n in CONFUSABLE[d] for d, n in zip(digit[hard], named[hard]))


def test_digits_match_captions_name_the_digit(match):
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    for text, n in zip(match.texts[:400], match.meta["named"][:400]):
        assert words[n] in text.split() or str(n) in text.split(), text
    assert len(set(match.texts)) > 50


# ----------------------------------------------------------------------------- JSONL


def _write_jsonl(folder, rows, name="data.jsonl"):
    path = folder / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def _media(folder, i, label):
    h, w = 20 + i, 30 - i
    bgr = np.zeros((h, w, 3), np.uint8)
    bgr[..., 2 if label == "cat" else 0] = 255  # red cats, blue dogs (BGR order on disk)
    cv2.imwrite(str(folder / f"img{i}.png"), bgr)
    (folder / "snd").mkdir(exist_ok=True)
    sf.write(folder / "snd" / f"a{i}.wav", 0.3 * np.sin(np.arange(4000) * 0.2), 8000)
    return {"image": f"img{i}.png", "text": f"a {label} photo", "audio": f"snd/a{i}.wav", "label": label}


def test_jsonl_happy_path(tmp_path):
    rows = [_media(tmp_path, i, "cat" if i % 2 else "dog") for i in range(20)]
    ds = load_jsonl(_write_jsonl(tmp_path, rows), seed=3)
    assert ds.labels == ("cat", "dog") and ds.modalities == ("image", "text", "audio")
    assert len(ds) == 20 and ds.texts[0] == "a dog photo"
    assert isinstance(ds.images, list) and ds.images[0].shape == (20, 30, 3) and ds.images[0].dtype == np.uint8
    assert tuple(ds.images[1][0, 0]) == (255, 0, 0) and tuple(ds.images[0][0, 0]) == (0, 0, 255)
    assert ds.audio[0].dtype == np.float32 and ds.audio[0].shape == (8000,) and ds.audio_rate == 16000
    rows_all = np.concatenate([ds.splits[s] for s in ("train", "val", "test")])
    assert sorted(rows_all.tolist()) == list(range(20))
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [14, 2, 4]
    again = load_jsonl(tmp_path / "data.jsonl", seed=3)
    assert all(np.array_equal(ds.splits[s], again.splits[s]) for s in ds.splits)


def test_jsonl_given_splits_and_labels(tmp_path):
    rows = [{"text": f"t{i}", "label": "b" if i % 2 else "a", "split": ("train", "val", "test")[i % 3]}
            for i in range(9)]
    ds = load_jsonl(_write_jsonl(tmp_path, rows), labels=["b", "a", "c"], task="matching")
    assert ds.labels == ("b", "a", "c") and ds.task == "matching" and ds.modalities == ("text",)
    assert ds.splits["val"].tolist() == [1, 4, 7] and ds.y.tolist()[:3] == [1, 0, 1]


def test_jsonl_sources_keep_their_rows_in_one_split_and_group_selection_folds(tmp_path):
    from mmedge.datasets.base import row_groups

    rows = [{"text": f"clip {i // 4} frame {i % 4}", "label": "b" if (i // 4) % 2 else "a", "source": f"video{i // 4}"}
            for i in range(80)]
    rows[-1].pop("source")  # a row without a source is a source of its own
    ds = load_jsonl(_write_jsonl(tmp_path, rows), seed=1)
    split_of = {int(r): s for s, idx in ds.splits.items() for r in idx}
    for v in range(20):
        assert len({split_of[r] for r in range(4 * v, min(4 * v + 4, 79))}) == 1  # a video's frames stay together
    assert len(np.unique(ds.meta["source"])) == 21 and row_groups(ds.meta).shape == (80, 1)
    assert "source" not in load_jsonl(_write_jsonl(tmp_path, [_OK, {"text": "y", "label": "b"}], "plain.jsonl")).meta


_OK = {"text": "x", "label": "a"}
_OK_B = {"text": "y", "label": "b"}


@pytest.mark.parametrize("rows, labels, pattern", [
    ([_OK, "{not json", _OK_B], None, r"line 2: invalid JSON"),
    ([_OK, {"text": "x"}, _OK_B], None, r'line 2: missing "label"'),
    ([_OK, {"label": "b"}], None, r"line 2: no modality"),
    ([_OK, {"image": "a.png", "label": "b"}], None, r"line 2: has modalities \['image'\].*same set"),
    ([_OK, {"text": "y", "label": "z"}], ["a", "b"], r"line 2: label 'z' is not one of the valid labels: a, b"),
    ([dict(_OK, split="train"), dict(_OK_B, split="dev")], None, r"line 2: unknown split 'dev'.*train, val, test"),
    ([dict(_OK, split="train"), _OK_B], None, r'line 2: no "split"'),
    ([_OK, _OK], None, r"at least 2 classes"),
    ([{"image": "missing.png", "label": "a"}, {"image": "m.png", "label": "b"}], None,
     r"line 1: image file not found: .*missing\.png"),
    ([{"audio": "gone.wav", "label": "a"}, {"audio": "g.wav", "label": "b"}], None,
     r"line 1: audio file not found: .*gone\.wav"),
    ([{"image": "bad.png", "label": "a"}, {"image": "bad.png", "label": "b"}], None,
     r"line 1: cannot read image .*bad\.png"),
])
def test_jsonl_errors(tmp_path, rows, labels, pattern):
    (tmp_path / "bad.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=pattern):
        load_jsonl(_write_jsonl(tmp_path, rows), labels=labels)


def test_jsonl_missing_file(tmp_path):
    with pytest.raises(DataError, match="JSONL file not found: .*nope.jsonl"):
        load_jsonl(tmp_path / "nope.jsonl")
