"""``digits-av``: handwritten digits seen (occluded), heard (in noise) and hinted at (text).

Built offline from scikit-learn's ``load_digits`` (1797 real 8x8 handwritten digits)
and espeak-ng. Each modality is deliberately imperfect on its own: the image is
partly occluded and noisy, the spoken word is buried in noise, and the caption only
narrows the digit down to 2-5 classes. Fusing the three is needed for high accuracy.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from mmedge.datasets.base import (
    DATASETS, MultimodalDataset, cached_build, expand_groups, stratified_split,
)
from mmedge.datasets.speech import speak_pool, voice_settings

__all__ = ["DigitsAVConfig", "build_digits_av", "DIGIT_WORDS", "CAPTION_CLUES", "caption_classes",
           "render_digit", "mix_at_snr"]

VERSION = "digits-av/1"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class DigitsAVConfig:
    """Degradation strengths and sizes of ``digits-av`` (defaults = the reference dataset).

    Attributes:
        variants_per_image: Samples made from each source image (own degradation, clip, caption).
        image_size: Side of the rendered square image in pixels.
        tint_max: Largest per-channel darkening of the paper colour (0..255).
        occlusion_frac: Range of the occluding rectangle's sides, as fractions of the image side.
        pixel_noise_std: Std of the Gaussian pixel noise (0..255 scale).
        contrast_range: Range of the random contrast factor (1 = unchanged).
        snr_db_range: Range of the speech-to-noise ratio in dB (speech power over its active part).
        clips_per_digit: Size of the spoken pool per digit (distinct voice/speed/pitch settings).
        speed_range: espeak-ng words per minute.
        pitch_range: espeak-ng pitch (0..99).
        clip_seconds: Length of each audio clip.
        audio_rate: Sample rate of the audio in Hz.
        split_fractions: Train/val/test fractions of the source images (and of the voice pool).
        voice_seed: Seed of the voice settings of the pool (kept fixed so the pool cache is shared).
        workers: Parallel espeak-ng processes.
    """

    variants_per_image: int = 4
    image_size: int = 32
    tint_max: float = 40.0
    occlusion_frac: tuple[float, float] = (0.45, 0.7)
    pixel_noise_std: float = 8.0
    contrast_range: tuple[float, float] = (0.35, 1.0)
    snr_db_range: tuple[float, float] = (-6.0, 4.0)
    clips_per_digit: int = 48
    speed_range: tuple[int, int] = (120, 220)
    pitch_range: tuple[int, int] = (20, 80)
    clip_seconds: float = 1.0
    audio_rate: int = 16000
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    voice_seed: int = 0
    workers: int = 4


_EVEN, _ODD = frozenset({0, 2, 4, 6, 8}), frozenset({1, 3, 5, 7, 9})
# Each clue is true for a set of 2-5 digits; several phrasings per clue.
_CLUE_GROUPS: tuple[tuple[frozenset[int], tuple[str, ...]], ...] = (
    (_EVEN, ("an even digit", "an even number", "a number divisible by two")),
    (_ODD, ("an odd digit", "an odd number", "a number that is not divisible by two")),
    (frozenset({7, 9}), ("an odd number above five", "an odd digit bigger than five")),
    (frozenset({6, 8}), ("an even number above five", "an even digit bigger than five")),
    (frozenset({0, 2, 4}), ("an even number below five", "an even digit smaller than five")),
    (frozenset({1, 3}), ("an odd number below five", "an odd digit smaller than five")),
    (frozenset({0, 1, 2, 3}), ("a number smaller than four", "a digit less than four")),
    (frozenset({6, 7, 8, 9}), ("a number greater than five", "a digit larger than five")),
    (frozenset({2, 3, 5, 7}), ("a prime number", "a prime digit")),
    (frozenset({3, 6, 9}), ("a multiple of three other than zero", "a nonzero multiple of three")),
    (frozenset({0, 4, 6, 8, 9}), ("a digit with a closed loop", "a shape that encloses a hole")),
    (frozenset({1, 4, 7}), ("a digit drawn with only straight lines", "a figure made of straight strokes")),
    (frozenset({0, 1, 4, 9}), ("a perfect square", "a square number")),
    (frozenset({1, 2, 4, 8}), ("a power of two",)),
    (frozenset({3, 4, 5}), ("a number from three to five",)),
)
CAPTION_CLUES: dict[str, frozenset[int]] = {p: s for s, ps in _CLUE_GROUPS for p in ps}
"""Every clue phrase a caption can contain -> the digits it is true for."""

_TEMPLATES = (
    "the card shows {}", "someone wrote {}", "it's {}", "this is {}", "the digit here is {}",
    "a hint: {}", "what was written is {}", "the page has {}", "look, {}", "the answer is {}",
)


def caption_classes(caption: str) -> frozenset[int]:
    """The digits a caption allows: those of the longest clue phrase it contains.

    Raises:
        ValueError: The caption contains no known clue.
    """
    found = [p for p in CAPTION_CLUES if p in caption]
    if not found:
        raise ValueError(f"no clue phrase in caption {caption!r}")
    return CAPTION_CLUES[max(found, key=len)]


def make_caption(label: int, rng: np.random.Generator) -> str:
    """A caption true for ``label`` that is consistent with 2-5 digits."""
    groups = [ps for s, ps in _CLUE_GROUPS if label in s]
    phrases = groups[rng.integers(len(groups))]
    return _TEMPLATES[rng.integers(len(_TEMPLATES))].format(phrases[rng.integers(len(phrases))])


def render_digit(digit8: np.ndarray, rng: np.random.Generator, *, size: int = 32, tint_max: float = 40.0) -> np.ndarray:
    """Renders an 8x8 ``load_digits`` image (0..16) as dark ink on tinted paper.

    Returns:
        (size, size, 3) float32 RGB in 0..255.
    """
    ink = cv2.resize(digit8.astype(np.float32) / 16.0, (size, size), interpolation=cv2.INTER_CUBIC)
    ink = np.clip(ink, 0.0, 1.0)[..., None]
    paper = 255.0 - rng.uniform(0.0, tint_max, size=3)
    ink_color = rng.uniform(0.0, 70.0, size=3)
    return (paper * (1.0 - ink) + ink_color * ink).astype(np.float32)


def degrade_image(img: np.ndarray, rng: np.random.Generator, cfg: DigitsAVConfig) -> np.ndarray:
    """Occludes a random rectangle, changes contrast, adds noise; returns uint8."""
    img = img.copy()
    side = img.shape[0]
    h, w = (np.round(rng.uniform(*cfg.occlusion_frac, size=2) * side)).astype(int)
    top, left = rng.integers(0, side - h + 1), rng.integers(0, side - w + 1)
    fill = rng.uniform(60, 200, size=3) if rng.random() < 0.5 else np.full(3, rng.uniform(60, 200))
    img[top:top + h, left:left + w] = fill + rng.normal(0, 10, size=(h, w, 1))
    img = _contrast_noise(img, rng, cfg.contrast_range, cfg.pixel_noise_std)
    return img


def _contrast_noise(img, rng, contrast_range, noise_std) -> np.ndarray:
    mean = img.mean()
    img = mean + rng.uniform(*contrast_range) * (img - mean)
    img = img + rng.normal(0.0, noise_std, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _noise(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power mix of white, brown and mains-hum noise (random proportions)."""
    white = rng.normal(size=n)
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    brown = np.fft.irfft(np.fft.rfft(rng.normal(size=n)) / np.maximum(freqs, 40.0), n)  # 1/f^2 power
    t = np.arange(n) / rate
    f0 = 50.0 if rng.random() < 0.5 else 60.0
    hum = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3, 4))
    parts = [x / np.sqrt(np.mean(x**2)) for x in (white, brown, hum)]
    w = rng.dirichlet([1.0, 1.0, 1.0])
    mix = sum(np.sqrt(wi) * p for wi, p in zip(w, parts))
    return mix / np.sqrt(np.mean(mix**2))


def mix_at_snr(speech: np.ndarray, offset: int, n: int, snr_db: float, rng: np.random.Generator,
               rate: int = 16000, *, normalize: bool = True) -> np.ndarray:
    """Places ``speech`` at ``offset`` in an ``n``-sample clip of noise at ``snr_db``.

    SNR is the speech power (over the speech itself) over the noise power.

    Args:
        normalize: Scale the result to a random peak of 0.3..0.9 (else speech keeps its level).

    Returns:
        (n,) float32.
    """
    p_speech = float(np.mean(speech.astype(np.float64) ** 2))
    clip = _noise(n, rate, rng) * np.sqrt(p_speech / 10.0 ** (snr_db / 10.0))
    clip[offset:offset + len(speech)] += speech[: n - offset]
    if normalize:
        clip *= rng.uniform(0.3, 0.9) / np.abs(clip).max()
    return clip.astype(np.float32)


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


def _pool_parts(n_clips: int, fractions, rng) -> dict[str, np.ndarray]:
    perm = rng.permutation(n_clips)
    cuts = np.round(np.cumsum(fractions)[:-1] * n_clips).astype(int)
    return dict(zip(("train", "val", "test"), np.split(perm, cuts)))


def _build(seed: int, cache_dir: Path, cfg: DigitsAVConfig) -> MultimodalDataset:
    rng = np.random.default_rng([seed, 1001])
    digits, target = _load_digits()
    group_splits = stratified_split(target, cfg.split_fractions, rng)
    settings = voice_settings(cfg.clips_per_digit, seed=cfg.voice_seed,
                              speed_range=cfg.speed_range, pitch_range=cfg.pitch_range)
    pool = speak_pool(DIGIT_WORDS, settings, cache_dir=cache_dir, sample_rate=cfg.audio_rate, workers=cfg.workers)
    parts = _pool_parts(cfg.clips_per_digit, cfg.split_fractions, rng)
    split_of = np.empty(len(target), dtype=object)
    for s, g in group_splits.items():
        split_of[g] = s
    source = np.repeat(np.arange(len(target)), cfg.variants_per_image)
    y = target[source]
    n, n_samples = len(source), int(round(cfg.clip_seconds * cfg.audio_rate))
    images = np.empty((n, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    audio = np.empty((n, n_samples), dtype=np.float32)
    snr, clip_id, texts = np.empty(n, np.float32), np.empty(n, np.int64), []
    for i, (src, label) in enumerate(zip(source, y)):
        img = render_digit(digits[src], rng, size=cfg.image_size, tint_max=cfg.tint_max)
        images[i] = degrade_image(img, rng, cfg)
        clip_id[i] = rng.choice(parts[split_of[src]])
        speech = pool[label][clip_id[i]][:n_samples]
        snr[i] = rng.uniform(*cfg.snr_db_range)
        offset = int(rng.integers(0, n_samples - len(speech) + 1))
        audio[i] = mix_at_snr(speech, offset, n_samples, float(snr[i]), rng, cfg.audio_rate)
        texts.append(make_caption(int(label), rng))
    return MultimodalDataset(
        name="digits-av", task="classification", labels=DIGIT_WORDS, y=y,
        splits=expand_groups(group_splits, source), images=images, texts=texts, audio=audio,
        audio_rate=cfg.audio_rate, meta={"source": source.astype(np.int64), "snr_db": snr, "clip": clip_id},
    )


def config_key(cfg) -> str:
    """Short hash of a config dataclass (part of cache keys)."""
    return hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:12]


@DATASETS.register("digits-av")
def build_digits_av(*, seed: int = 0, cache_dir: Path, config: DigitsAVConfig | None = None) -> MultimodalDataset:
    """Builds ``digits-av`` (image + text + audio, 10 classes), cached under ``cache_dir``.

    Args:
        seed: Fixes splits, degradations, clip choices and captions.
        cache_dir: Cache root (the dataset and the spoken pool are stored there).
        config: Degradation strengths; ``DigitsAVConfig()`` by default.
    """
    cfg = config or DigitsAVConfig()
    key = f"digits-av-{VERSION.split('/')[1]}-s{seed}-{config_key(cfg)}"
    return cached_build(cache_dir, key, "digits-av", lambda: _build(seed, cache_dir, cfg))
