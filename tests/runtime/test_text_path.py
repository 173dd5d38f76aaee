"""The text path of a Session: the text-embedding cache, and text padded to the batch's longest."""
from __future__ import annotations

import numpy as np

from mmedge.runtime import Session
from mmedge.runtime import session as session_module
from mmedge.runtime.text_cache import TextCache


def _images(rng, n):
    return list(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))


def test_text_cache_skips_the_text_encoder(session, rng):
    image = _images(rng, 1)[0]
    prompt = "a prompt that only this test uses"
    first = session.predict(image=image, text=prompt)
    runs = session.text_cache_info().encoder_runs
    second = session.predict(image=image, text=prompt)
    assert "encoder.text" in first.timings_ms and "encoder.text" not in second.timings_ms
    assert session.text_cache_info().encoder_runs == runs
    np.testing.assert_array_equal(first.probabilities, second.probabilities)
    prompts = ["prewarmed one", "prewarmed two"]
    feats = session.encode_texts(prompts)
    assert feats["text_pooled"].shape == (2, 384) and feats["text_seq"].shape[:2] == (2, 8)  # bucketed
    runs = session.text_cache_info().encoder_runs
    pred = session.predict(image=[image, image], text=prompts)
    assert session.text_cache_info().encoder_runs == runs and "encoder.text" not in pred.timings_ms


def test_texts_padded_to_the_batchs_longest_give_the_fixed_length_answer(bundle_path, rng, monkeypatch):
    """Cached rows of different token counts mix in one batch; the answer equals max_length padding."""
    images = _images(rng, 3)
    texts = ["a two", "the handwritten digit seven drawn with a thick marker pen on paper", "nine"]
    with Session(bundle_path, threads=1) as bucketed:
        assert bucketed._preprocessors["text"].bucket == session_module.TEXT_BUCKET
        bucketed.encode_texts(texts[:1])  # cached at 8 tokens; the batch below runs at 16
        got = bucketed.predict(image=images, text=texts)
    monkeypatch.setattr(session_module, "TEXT_BUCKET", 0)
    with Session(bundle_path, threads=1, text_cache_size=0) as fixed:
        assert fixed._preprocessors["text"].bucket == 0
        want = fixed.predict(image=images, text=texts)
    assert got.labels == want.labels
    np.testing.assert_allclose(got.probabilities, want.probabilities, atol=1e-5)


def test_text_cache_is_lru():
    cache = TextCache(2)
    encode = lambda texts: {"v": np.array([[len(t)] for t in texts], np.float32)}  # noqa: E731
    out = cache.lookup(["aa", "b", "aa"], encode)
    np.testing.assert_array_equal(out["v"][:, 0], [2, 1, 2])
    cache.lookup(["aa"], encode)  # "aa" most recent
    cache.lookup(["ccc"], encode)  # evicts "b"
    info = cache.info()
    assert info.currsize == 2 and info.encoder_runs == 2
    cache.lookup(["b"], encode)
    assert cache.info().encoder_runs == 3
    off = TextCache(0)
    off.lookup(["x"], encode), off.lookup(["x"], encode)
    assert off.info().encoder_runs == 2 and off.info().currsize == 0
