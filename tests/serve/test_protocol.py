"""The wire contract and the batch handler, without a server (numpy only: runs in every environment)."""
import json
import types

import numpy as np
import pytest

from mmedge.errors import ConfigError, InputError
from mmedge.serve.serve_config import ServeConfig
from mmedge.serve.handler import BundleHandler
from mmedge.serve.protocol import WireLimits, decode_outputs, decode_request, encode_outputs


def _text(*texts):
    return np.array([[t.encode()] for t in texts], dtype=object)


def test_decode_request_splits_rows():
    img = np.zeros((2, 5, 7, 3), np.uint8)
    rows = decode_request({"image": img, "text": _text("a", "b"),
                           "audio": np.zeros((2, 800), np.float32), "audio_rate": np.array([[8000], [8000]], np.int32)})
    assert rows.modalities == ("image", "text", "audio") and rows.size == 2
    assert rows.items["text"] == ["a", "b"] and rows.items["audio"][1][1] == 8000
    assert rows.items["image"][0].shape == (5, 7, 3)


@pytest.mark.parametrize("data, words", [
    ({}, "inputs must be among"),
    ({"txt": _text("a")}, "inputs must be among"),
    ({"text": np.array([[b"\xff\xfe"]], dtype=object)}, "not valid UTF-8"),
    ({"text": _text("x" * 5000)}, "at most 4096"),
    ({"image": np.zeros((1, 4, 4, 4), np.uint8)}, "uint8 (batch, H, W, 3)"),
    ({"image": np.zeros((1, 3000, 8, 3), np.uint8)}, "at most 2048 pixels"),
    ({"audio": np.zeros((1, 10), np.float32)}, "needs 'audio_rate'"),
    ({"audio": np.zeros((1, 10), np.float32), "audio_rate": np.array([[5]], np.int32)}, "between 1000 and"),
    ({"audio": np.zeros((1, 31 * 1000), np.float32), "audio_rate": np.array([[1000]], np.int32)}, "at most 30 s"),
    ({"audio_rate": np.array([[1000]], np.int32)}, "without 'audio'"),
    ({"text": _text("a", "b"), "image": np.zeros((1, 4, 4, 3), np.uint8)}, "same, non-zero batch size"),
])
def test_decode_request_refuses_bad_payloads(data, words):
    with pytest.raises(InputError, match=None) as info:
        decode_request(data)
    assert words in str(info.value)


def test_limits_and_config_are_checked():
    with pytest.raises(ConfigError):
        WireLimits(max_image_side=0)
    with pytest.raises(ConfigError, match="must differ"):
        ServeConfig(http_port=9000, grpc_port=9000)
    with pytest.raises(ConfigError, match="IP address"):
        ServeConfig(host="localhost:80")
    with pytest.raises(ConfigError, match="model name"):
        ServeConfig(model_name="a b")
    assert ServeConfig(instances=2).instance_threads(4) == 2 and ServeConfig(threads=3).instance_threads(8) == 3


def test_outputs_round_trip_to_the_same_prediction(session, rng):
    images = [rng.integers(0, 256, (40, 30, 3), dtype=np.uint8) for _ in range(3)]
    pred = session.predict(image=images, text=["one", "two", "three"])
    members = tuple(m.name for m in session.bundle.members)
    out = encode_outputs(pred, members, slice(1, 3))
    assert out["member_probabilities"].shape == (2, len(members), len(session.bundle.labels))
    assert np.isnan(out["member_probabilities"][:, 1]).all()  # cross_attention did not run (no audio)
    back = decode_outputs(out, request_ms=1.5)
    assert back.labels == pred.labels[1:3] and np.array_equal(back.probabilities, pred.probabilities[1:3])
    assert list(back.member_probabilities) == ["concat"] and back.skipped_members == pred.skipped_members
    assert back.timings_ms["request"] == 1.5 and "server.total" in back.timings_ms and back.note == pred.note
    assert json.loads(out["meta"][0, 0])["precision"] == "fp32"


def test_handler_merges_a_batch_and_matches_the_session(session, rng):
    handler = BundleHandler(session)
    imgs = rng.integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    waves = rng.standard_normal((3, 8000)).astype(np.float32) * 0.1
    requests = [types.SimpleNamespace(data={"image": imgs[:2], "text": _text("a cat", "two")}),
                {"image": imgs[2:], "text": _text("seven"), "audio": waves[2:],
                 "audio_rate": np.array([[8000]], np.int32)},
                {"image": imgs[:1], "text": _text("nine")}]
    responses = handler(requests)
    assert [r["probabilities"].shape[0] for r in responses] == [2, 1, 1]
    alone = session.predict(image=list(imgs[2:]), text=["seven"], audio=list(waves[2:]), audio_rate=8000)
    np.testing.assert_allclose(responses[1]["probabilities"], alone.probabilities, atol=1e-5)
    first = session.predict(image=list(imgs[:2]), text=["a cat", "two"])
    np.testing.assert_allclose(responses[0]["probabilities"], first.probabilities, atol=1e-5)
    assert responses[0]["label"][:, 0].tolist() == [lb.encode() for lb in first.labels]


def test_handler_refuses_a_malformed_request(session):
    with pytest.raises(InputError, match="empty or whitespace"):
        BundleHandler(session)([{"text": _text("  "), "image": np.zeros((1, 8, 8, 3), np.uint8)}])


def test_one_bad_request_never_fails_the_others_of_its_batch(session, rng):
    """Whitespace-only text with the same shapes as the good rows: refused on its own, the rest answered right."""
    handler = BundleHandler(session)
    imgs = rng.integers(0, 256, (4, 24, 24, 3), dtype=np.uint8)
    texts = ["a cat", "   ", "seven", "two"]
    requests = [{"image": imgs[i:i + 1], "text": _text(t)} for i, t in enumerate(texts)]
    requests.append({"image": imgs[:2], "text": _text("nine", "\t\n")})  # one bad row: the whole request refused
    answers = handler.answer(requests)
    assert isinstance(answers[1], InputError) and "empty or whitespace" in str(answers[1])
    assert isinstance(answers[4], InputError) and "text[1]" in str(answers[4])
    good = [0, 2, 3]
    alone = session.predict(image=[imgs[i] for i in good], text=[texts[i] for i in good])
    for row, i in enumerate(good):
        np.testing.assert_allclose(answers[i]["probabilities"], alone.probabilities[row:row + 1], atol=1e-5)
        assert answers[i]["label"][0, 0] == alone.labels[row].encode()


def test_a_failure_of_a_merged_run_is_isolated_request_by_request(session, rng):
    """Requests whose rows pass the checks but that the bundle cannot run (a modality it needs is missing) are
    merged, fail, and are run again one by one: each gets its own error; the other group is answered."""
    handler = BundleHandler(session)
    img = rng.integers(0, 256, (1, 24, 24, 3), dtype=np.uint8)
    answers = handler.answer([{"text": _text("only text")}, {"image": img, "text": _text("seven")},
                              {"text": _text("more text")}])
    assert isinstance(answers[0], InputError) and "needs ['image']" in str(answers[0])
    assert isinstance(answers[2], InputError) and "needs ['image']" in str(answers[2])
    np.testing.assert_allclose(answers[1]["probabilities"], session.predict(image=img, text="seven").probabilities,
                               atol=1e-5)


def test_answer_all_gives_each_request_its_own_answer():
    from mmedge.serve.steps import answer_all

    def step(data):
        if data["x"] < 0:
            raise InputError("negative")
        return {"y": data["x"] * 2}

    answers = answer_all(step, [{"x": 1}, {"x": -1}, {"x": 3}])
    assert answers[0] == {"y": 2} and isinstance(answers[1], InputError) and answers[2] == {"y": 6}


def test_the_largest_request_worth_reading_follows_the_limits():
    limits = WireLimits(max_image_side=100, max_text_bytes=10, max_audio_seconds=1.0, audio_rates=(1000, 2000))
    assert limits.max_row_bytes() == 100 * 100 * 3 + 10 + 4 + 2000 * 4 + 4
    assert limits.max_request_bytes(4, overhead=0) == 4 * limits.max_row_bytes()
    assert WireLimits().max_request_bytes(16) > 16 * 2048 * 2048 * 3
