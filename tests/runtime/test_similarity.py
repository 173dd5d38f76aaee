"""The runtime's similarity record and scores (numpy only): the manifest object read and checked, the
model's ``scale * cos + bias`` and its activation; the bundle-level path is in tests/e2e/test_pretrained_bundles.py."""
from __future__ import annotations

import numpy as np
import pytest

from mmedge.errors import BundleError, InputError
from mmedge.runtime.manifest import to_json
from mmedge.runtime.manifest_schema import read_dataclass
from mmedge.runtime.similarity import SimilarityInfo, activate, similarity_scores

RAW = {"modalities": ["image", "text"], "scale": {"image": 14.3}, "bias": -1.5, "activation": "sigmoid", "family": "siglip"}


def similarity_info(raw):
    return read_dataclass(SimilarityInfo, raw, "similarity")


def test_the_manifest_record_round_trips():
    info = similarity_info(RAW)
    assert (info.modalities, dict(info.scale), info.bias, info.activation, info.family) == \
        (("image", "text"), {"image": 14.3}, -1.5, "sigmoid", "siglip")
    assert similarity_info(to_json(info)) == info


@pytest.mark.parametrize("bad,match", [
    ({**RAW, "modalities": ["image"]}, "similarity.modalities"), ({**RAW, "modalities": ["audio", "text"]},
                                                                   "similarity.scale: must hold a scale for each of"),
    ({**RAW, "activation": "relu"}, "similarity.activation"), ({**RAW, "bias": float("nan")}, "similarity.bias"),
    ({**RAW, "scale": {"image": "x"}}, "similarity.scale.image"), ({**RAW, "scale": {"image": 0}}, "similarity.scale.image"),
    ([1, 2], "similarity: must be a JSON object")])
def test_a_malformed_record_is_a_bundle_error_at_its_path(bad, match):
    with pytest.raises(BundleError, match=match):
        similarity_info(bad)


def test_scores_are_scale_times_cosine_plus_bias_and_the_activation():
    rng = np.random.default_rng(0)
    q, t = rng.standard_normal((3, 8)).astype(np.float32), rng.standard_normal((5, 8)).astype(np.float32)
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (t / np.linalg.norm(t, axis=1, keepdims=True)).T
    sig = similarity_info(RAW)
    np.testing.assert_allclose(similarity_scores(q, t, sig, "image"), 14.3 * cos - 1.5, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(similarity_scores(q, t, sig, "image", probabilities=True),
                               1 / (1 + np.exp(-(14.3 * cos - 1.5))), rtol=1e-5)
    clip = SimilarityInfo(modalities=("image", "text"), scale={"image": 100.0})
    probs = similarity_scores(q, t, clip, "image", probabilities=True)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probs.argmax(1), cos.argmax(1))
    with pytest.raises(InputError, match="scores \\['image'\\] against text, not audio"):
        similarity_scores(q, t, clip, "audio")


def test_activate_is_stable_on_large_logits():
    out = activate(np.array([[1000.0, 0.0, -1000.0]], np.float32), "softmax")
    np.testing.assert_allclose(out, [[1.0, 0.0, 0.0]], atol=1e-6)


def test_a_bundle_without_similarity_says_so(session, tmp_path):
    assert session.bundle.manifest.similarity is None
    with pytest.raises(InputError, match="has no similarity.*mmedge export hf:PATH"):
        session.similarity(image=np.zeros((32, 32, 3), np.uint8), text=["a cat"])
    with pytest.raises(InputError, match="has no similarity"):
        session.stream(tmp_path / "any.avi", queries=["a cat"])
    with pytest.raises(InputError, match="queries= .* or text=.*not both"):
        session.stream(tmp_path / "any.avi", text="seven", queries=["a cat"])


def test_export_flags_for_pretrained_folders_are_refused_for_checkpoints(tmp_path):
    from typer.testing import CliRunner

    from mmedge.cli import app

    def fails(*args: str) -> str:
        result = CliRunner().invoke(app, ["export", *args])
        assert result.exit_code != 0
        return " ".join(result.output.split())

    assert "are for hf:PATH" in fails(str(tmp_path), "--labels", "a,b")
    assert "needs the zero-shot member's classes: --labels" in fails(f"hf:{tmp_path}")
    assert "has no config.json" in fails(f"hf:{tmp_path}", "--labels", "a,b")
