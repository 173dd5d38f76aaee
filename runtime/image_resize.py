"""Image interpolation and geometry for the resize modes of ``mmedge.runtime.preprocess``. numpy and cv2 only.

Interpolations (``ImageSpec.interpolation``, the ``INTERPOLATIONS`` registry):

- ``bilinear``, ``bicubic``, ``nearest``: Pillow's ``Image.resize`` reimplemented in numpy, the
  resampling Hugging Face image processors run. Pillow resamples in two separable passes with
  filters widened by the scale factor when shrinking (antialiasing) and 22-bit fixed-point
  weights, rounding to uint8 after each pass; this module computes the same sums exactly (float64
  matmuls of the pixels by the fixed-point weights, in bands of 8 output pixels: ``_bands``, cached
  per (in size, out size, filter)) in the same pass order (Pillow 13: rows first when the height
  shrinks by more than twice as many pixels as the width, else columns first; Pillow < 13 always ran
  columns first, which moves some pixels by a few levels in those cases), so its output equals
  Pillow 13's byte for byte: 0 difference measured on the normalised pixel tensor (``PIL_TOLERANCE``
  is the bound the tests hold it to).
  A 640x480 frame to 298x224 bicubic costs about 2.4 ms of CPU on one BLAS thread, Pillow's cost (the
  former int32 tap-by-tap passes: 16.5 ms; cv2 0.45 ms, without antialiasing), measured side by side by
  ``python benchmarks/resize_speed.py`` (docs/pretrained_models.md has the table).
- ``cv2_bilinear``, ``cv2_area``, ``cv2_nearest``: OpenCV's ``cv2.resize`` (no antialiasing for
  bilinear): what the first bundles used (resize modes ``bilinear``, ``area``, ``nearest``).

Geometry helpers: ``center_crop`` (Hugging Face's, zero-padding an image smaller than the crop),
``shortest_edge_size`` (Hugging Face's ``get_resize_output_image_size``) and ``letterbox``.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from mmedge.registry import Registry

__all__ = ["Interpolation", "INTERPOLATIONS", "interpolation_names", "pil_resize", "center_crop",
           "shortest_edge_size", "letterbox", "PIL_TOLERANCE"]

PIL_TOLERANCE = 0.02  # bound on |runtime - PIL| in normalised units held by the tests; measured: 0.0
_BITS = 22  # Pillow's PRECISION_BITS (32 - 8 - 2)
_NUDGE = 2.0 ** -(_BITS + 1)  # sum + 2**-23 rounds to nearest as Pillow's (sum + 2**21) >> 22 floors
_BAND = 8  # output pixels per dense block of a pass's weights (measured fastest of 4-64 on 640x480 frames)


@dataclass(frozen=True)
class Interpolation:
    """One resampling filter.

    Attributes:
        name: The ``ImageSpec.interpolation`` value that selects it.
        resize: ``resize(image, (height, width))``: uint8 (H, W, 3) -> uint8 (height, width, 3).
        summary: One line for docs and messages.
    """

    name: str
    resize: Callable[[np.ndarray, tuple[int, int]], np.ndarray]
    summary: str


INTERPOLATIONS: Registry[Interpolation] = Registry("image interpolation")


def interpolation_names() -> tuple[str, ...]:
    """The registered interpolations, sorted."""
    return tuple(INTERPOLATIONS.names())


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    a, x = -0.5, np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


_FILTERS = {"bilinear": (_bilinear, 1.0), "bicubic": (_bicubic, 2.0)}  # filter, support (Pillow's Resample.c)


@functools.lru_cache(maxsize=64)
def _coefficients(in_size: int, out_size: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc``: source indices (out, K) and int32
    weights (out, K) (taps past the source's edge get weight 0)."""
    fn, support = _FILTERS[kind]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    weights = fn((taps[None, :] + xmin[:, None] - center[:, None] + 0.5) * (1.0 / filterscale))
    weights = np.where(taps[None, :] < xmax[:, None], weights, 0.0)
    total = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, total, out=weights.copy(), where=total != 0)
    fixed = np.trunc(weights * (1 << _BITS) + np.where(weights < 0, -0.5, 0.5)).astype(np.int32)
    index = np.minimum(xmin[:, None] + taps[None, :], in_size - 1)
    index.flags.writeable = fixed.flags.writeable = False
    return index, fixed


@functools.lru_cache(maxsize=64)
def _bands(in_size: int, out_size: int, kind: str) -> tuple[tuple[int, int, int, int, np.ndarray], ...]:
    """Pillow's weights for one axis as dense float64 blocks of the (out, in) resampling matrix, one per
    ``_BAND`` output pixels: ``(o0, o1, i0, i1, weights)`` with weights (o1 - o0, i1 - i0) = the 22-bit
    fixed-point weights times 2**-22 (exact: a power-of-two scale), zero outside each pixel's taps."""
    index, fixed = _coefficients(in_size, out_size, kind)
    bands = []
    for o0 in range(0, out_size, _BAND):
        o1 = min(o0 + _BAND, out_size)
        idx, weights = index[o0:o1], fixed[o0:o1]
        used = weights != 0
        if not used.any():  # a band of all-zero weights: zeros out, as Pillow's
            used = np.ones_like(used)
        i0, i1 = int(idx[used].min()), int(idx[used].max()) + 1
        block = np.zeros((o1 - o0, i1 - i0))
        rows = np.broadcast_to(np.arange(o1 - o0)[:, None], idx.shape)
        np.add.at(block, (rows[used], idx[used] - i0), weights[used] * 2.0 ** -_BITS)
        block.flags.writeable = False
        bands.append((o0, o1, i0, i1, block))
    return tuple(bands)


def _pass(image: np.ndarray, out_size: int, kind: str) -> np.ndarray:
    """One separable pass along axis 0, uint8 (H, W, 3) -> uint8 (out_size, W, 3), as Pillow's
    ``ImagingResample*_8bpc``: per band, a float64 matmul of the weights by the band's source rows (converted
    there, so the working set stays in cache). Every product and partial sum is an integer times 2**-22 below
    2**31 in magnitude, so float64 holds it exactly in any summation order; ``floor(sum + 1/2)`` (Pillow's
    rounding shift) is then OpenCV's saturating round-to-nearest-even of ``sum + 2**-23``, which never meets a
    tie, clipped to [0, 255] as Pillow clips."""
    import cv2  # here, not at import: the runtime loads OpenCV only for image work (tests/runtime/test_import_cost.py)

    rows = image.reshape(image.shape[0], -1)
    out = np.empty((out_size, rows.shape[1]), dtype=np.uint8)
    sums = np.empty((_BAND, rows.shape[1]))
    for o0, o1, i0, i1, block in _bands(image.shape[0], out_size, kind):
        np.matmul(block, rows[i0:i1].astype(np.float64), out=sums[:o1 - o0])
        cv2.add(sums[:o1 - o0], _NUDGE, dst=out[o0:o1], dtype=cv2.CV_8U)
    return out.reshape((out_size,) + image.shape[1:])


def pil_resize(image: np.ndarray, size: tuple[int, int], kind: str) -> np.ndarray:
    """Pillow's ``Image.resize((width, height), BILINEAR / BICUBIC)`` of an RGB uint8 image, in numpy.

    Each pass runs along axis 0 (banded matmuls); the horizontal one on the transposed image
    (``cv2.transpose``), in Pillow 13's pass order.

    Args:
        image: uint8 (H, W, 3).
        size: The output (height, width).
        kind: ``"bilinear"`` or ``"bicubic"``.

    Returns:
        uint8 (height, width, 3), equal to Pillow's output.
    """
    import cv2

    height, width = size
    shrink_rows, shrink_cols = image.shape[0] - height, image.shape[1] - width
    axes = (0, 1) if shrink_rows > 0 and shrink_rows > 2 * shrink_cols else (1, 0)  # Pillow >= 13's pass order
    out, transposed = np.ascontiguousarray(image), False
    for axis in axes:
        if size[axis] == image.shape[axis]:
            continue
        if (axis == 1) != transposed:
            out, transposed = cv2.transpose(out), not transposed
        out = _pass(out, size[axis], kind)
    return cv2.transpose(out) if transposed else out


def _nearest_index(in_size: int, out_size: int) -> np.ndarray:
    step = in_size / out_size  # Pillow's ImagingScaleAffine: positions accumulated from step / 2
    positions = np.cumsum(np.concatenate([[0.5 * step], np.full(out_size - 1, step)]))
    return np.minimum(positions.astype(np.int64), in_size - 1)


def _pil_nearest(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow's NEAREST: the source pixel under each output pixel's centre."""
    rows, cols = _nearest_index(image.shape[0], size[0]), _nearest_index(image.shape[1], size[1])
    return np.ascontiguousarray(image[rows][:, cols])


def _cv2(flag: str) -> Callable[[np.ndarray, tuple[int, int]], np.ndarray]:
    def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        import cv2

        return cv2.resize(image, (size[1], size[0]), interpolation=getattr(cv2, flag))
    return resize


for _kind in ("bilinear", "bicubic"):
    INTERPOLATIONS.register(_kind)(Interpolation(
        _kind, functools.partial(pil_resize, kind=_kind), f"Pillow's {_kind} (antialiased), as Hugging Face processors"))
INTERPOLATIONS.register("nearest")(Interpolation("nearest", _pil_nearest, "Pillow's nearest neighbour"))
for _name, _flag in (("cv2_bilinear", "INTER_LINEAR"), ("cv2_area", "INTER_AREA"), ("cv2_nearest", "INTER_NEAREST")):
    INTERPOLATIONS.register(_name)(Interpolation(_name, _cv2(_flag), f"OpenCV's {_name[4:]} (the first bundles')"))


def shortest_edge_size(height: int, width: int, edge: int) -> tuple[int, int]:
    """The (height, width) with the shorter side ``edge`` and the aspect kept, as Hugging Face computes it
    (``int(edge * long / short)`` for the long side)."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(edge * long / short)
    return (new_long, edge) if width <= height else (edge, new_long)


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centred ``height`` x ``width`` window, as Hugging Face's ``center_crop``: an axis shorter than the
    crop is zero-padded (``ceil`` of half the gap before)."""
    out = image
    for axis, want in ((0, height), (1, width)):
        have = out.shape[axis]
        if have >= want:
            start = (have - want) // 2
            out = np.take(out, np.arange(start, start + want), axis=axis)
        else:
            before = math.ceil((want - have) / 2)
            pad = [(0, 0)] * out.ndim
            pad[axis] = (before, want - have - before)
            out = np.pad(out, pad)
    return np.ascontiguousarray(out)


def letterbox(image: np.ndarray, side: int, interpolation: Interpolation, pad_value: int) -> np.ndarray:
    """Fits the image into ``side`` x ``side`` keeping its aspect (the long side becomes ``side``, the short
    one ``round(short * side / long)``) and pads the rest evenly with ``pad_value``."""
    height, width = image.shape[:2]
    ratio = side / max(height, width)
    new = (max(1, round(height * ratio)), max(1, round(width * ratio)))
    resized = interpolation.resize(image, new) if new != (height, width) else image
    out = np.full((side, side, 3), pad_value, dtype=np.uint8)
    top, left = (side - new[0]) // 2, (side - new[1]) // 2
    out[top:top + new[0], left:left + new[1]] = resized
    return out
