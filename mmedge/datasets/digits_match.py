"""``digits-match``: image-text matching on handwritten digits (seed article, section 4.3).

Each row pairs a lightly degraded ``load_digits`` image with a caption naming a digit;
the label says whether the caption names the digit shown. Half the non-matching
captions name a visually confusable digit (hard negatives), half a random other one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmedge.datasets.base import DATASETS, MultimodalDataset, cached_build, expand_groups, stratified_split
from mmedge.datasets.digits_av import DIGIT_WORDS, _contrast_noise, _load_digits, config_key, render_digit

__all__ = ["DigitsMatchConfig", "build_digits_match", "CONFUSABLE", "KIND_MATCH", "KIND_HARD", "KIND_RANDOM"]

VERSION = "digits-match/1"
KIND_MATCH, KIND_HARD, KIND_RANDOM = 0, 1, 2
"""Values of ``meta["kind"]``: a true caption, a hard negative, a random negative."""

CONFUSABLE: dict[int, tuple[int, ...]] = {
    0: (6, 8), 1: (7, 4), 2: (7,), 3: (8, 5, 9), 4: (1, 7), 5: (3, 9),
    6: (0, 8), 7: (1, 4, 2), 8: (3, 0, 6, 9), 9: (3, 8, 5),
}
"""Digit -> digits that look like it (the hard negatives)."""

_TEMPLATES = (
    "the number {w}", "a handwritten {d}", "this shows a {w}", "digit {d}", "{w}",
    "a {w} written by hand", "the figure {d}", "someone wrote the number {w}",
    "an image of the digit {w}", "it is a {w}", "a scanned {d}", "the character {d}",
)


@dataclass(frozen=True)
class DigitsMatchConfig:
    """Sizes and (light) degradations of ``digits-match``.

    Attributes:
        pairs_per_image: Rows made from each source image.
        match_fraction: Probability that a row's caption names the digit shown.
        hard_fraction: Share of the non-matching captions that name a confusable digit.
        image_size: Side of the rendered square image in pixels.
        tint_max: Largest per-channel darkening of the paper colour (0..255).
        pixel_noise_std: Std of the Gaussian pixel noise (0..255 scale).
        contrast_range: Range of the random contrast factor.
        split_fractions: Train/val/test fractions of the source images.
    """

    pairs_per_image: int = 4
    match_fraction: float = 0.5
    hard_fraction: float = 0.5
    image_size: int = 32
    tint_max: float = 40.0
    pixel_noise_std: float = 8.0
    contrast_range: tuple[float, float] = (0.8, 1.0)
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)


def describe_digit(d: int, rng: np.random.Generator) -> str:
    """A caption naming digit ``d`` in one of several phrasings."""
    return _TEMPLATES[rng.integers(len(_TEMPLATES))].format(w=DIGIT_WORDS[d], d=d)


def _pick_caption_digit(label: int, rng: np.random.Generator, cfg: DigitsMatchConfig) -> tuple[int, int]:
    if rng.random() < cfg.match_fraction:
        return label, KIND_MATCH
    if rng.random() < cfg.hard_fraction:
        options = CONFUSABLE[label]
        return int(options[rng.integers(len(options))]), KIND_HARD
    others = [d for d in range(10) if d != label]
    return int(others[rng.integers(len(others))]), KIND_RANDOM


def _build(seed: int, cfg: DigitsMatchConfig) -> MultimodalDataset:
    rng = np.random.default_rng([seed, 2002])
    digits, target = _load_digits()
    group_splits = stratified_split(target, cfg.split_fractions, rng)
    source = np.repeat(np.arange(len(target)), cfg.pairs_per_image)
    n = len(source)
    images = np.empty((n, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    y, kind, named = (np.empty(n, np.int64) for _ in range(3))
    texts: list[str] = []
    for i, src in enumerate(source):
        img = render_digit(digits[src], rng, size=cfg.image_size, tint_max=cfg.tint_max)
        images[i] = _contrast_noise(img, rng, cfg.contrast_range, cfg.pixel_noise_std)
        named[i], kind[i] = _pick_caption_digit(int(target[src]), rng, cfg)
        y[i] = int(kind[i] == KIND_MATCH)
        texts.append(describe_digit(int(named[i]), rng))
    return MultimodalDataset(
        name="digits-match", task="matching", labels=("no_match", "match"), y=y,
        splits=expand_groups(group_splits, source), images=images, texts=texts,
        meta={"source": source.astype(np.int64), "digit": target[source], "named": named, "kind": kind},
    )


@DATASETS.register("digits-match")
def build_digits_match(*, seed: int = 0, cache_dir: Path, config: DigitsMatchConfig | None = None) -> MultimodalDataset:
    """Builds ``digits-match`` (image + caption -> match / no_match), cached under ``cache_dir``.

    Args:
        seed: Fixes splits, degradations and captions.
        cache_dir: Cache root.
        config: Sizes and degradations; ``DigitsMatchConfig()`` by default.
    """
    cfg = config or DigitsMatchConfig()
    key = f"digits-match-{VERSION.split('/')[1]}-s{seed}-{config_key(cfg)}"
    return cached_build(cache_dir, key, "digits-match", lambda: _build(seed, cfg))
