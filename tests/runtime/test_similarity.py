"""The runtime's similarity record and scores (numpy only): the manifest object read and checked, the
model's ``scale * cos + bias`` and its activation; the bundle-level path is in tests/e2e/test_pretrained_bundles.py."""
from __future__ import annotations

import numpy as np
import pytest

from mmedge.errors import BundleError, InputError
from mmedge.runtime.similarity import SimilarityInfo, activate, similarity_info, similarity_scores

RAW = {"modalities": ["image", "text"], "scale": {"image": 14.3}, "bias": -1.5, "activation": "sigmoid", "family": "siglip"}


def test_the_manifest_record_round_trips():
    info = similarity_info(RAW, ("image", "text"))
    assert info == SimilarityInfo(modalities=("image", "text"), scale={"image": 14.3}, bias=-1.5, activation="sigmoid",
                                  family="siglip")
    assert similarity_info(info.to_json(), ("image", "text")) == info
    assert similarity_info(None, ("image",)) is None


@pytest.mark.parametrize("bad,match", [
    ({**RAW, "modalities": ["image"]}, "must be text and"), ({**RAW, "modalities": ["audio", "text"]}, "must be text and"),
    ({**RAW, "activation": "relu"}, "activation must be one of"), ({**RAW, "bias": float("nan")}, "bias must be a finite"),
    ({**RAW, "scale": {"image": "x"}}, "scale.image must be"), ([1, 2], "must be an object")])
def test_a_malformed_record_is_a_bundle_error(bad, match):
    with pytest.raises(BundleError, match=match):
        similarity_info(bad, ("image", "text"))


def test_scores_are_scale_times_cosine_plus_bias_and_the_activation():
    rng = np.random.default_rng(0)
    q, t = rng.standard_normal((3, 8)).astype(np.float32), rng.standard_normal((5, 8)).astype(np.float32)
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (t / np.linalg.norm(t, axis=1, keepdims=True)).T
    sig = similarity_info(RAW, ("image", "text"))
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
