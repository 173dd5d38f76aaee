"""The runtime's Pillow-exact resize against Pillow, OpenCV and its former int32 passes (issue 17).

One camera frame (640x480 RGB, a real photo upscaled) resized the way CLIP's processor does (shortest
edge 224: 298x224) and SigLIP's (224x224), bicubic and bilinear, every variant timed interleaved on one
BLAS thread: median wall ms and median CPU ms of the calling thread (``time.thread_time``: what the call
costs, whatever else the machine runs); each variant is checked against Pillow (max |difference| in uint8
levels)::

    python benchmarks/resize_speed.py [--iters 50]

``former int32 passes`` is the implementation this module's matmuls replaced (kept here, verbatim in
arithmetic, to measure the change side by side).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import cv2
import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits

from mmedge.runtime.image_resize import _coefficients, pil_resize
from mmedge.runtime.timing import LatencyStats, run_interleaved

_PIL = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}
_CV2 = {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR}


def _former_pass(image: np.ndarray, out_size: int, kind: str, axis: int) -> np.ndarray:
    """The former pass: int32 sums tap by tap (``np.take`` per tap), Pillow's rounding shift."""
    index, fixed = _coefficients(image.shape[axis], out_size, kind)
    acc = np.full(image.shape[:axis] + (out_size,) + image.shape[axis + 1:], 1 << 21, dtype=np.int32)
    shape = (-1, 1, 1) if axis == 0 else (1, -1, 1)
    for k in range(index.shape[1]):
        acc += np.take(image, index[:, k], axis=axis) * fixed[:, k].reshape(shape)
    return np.clip(acc >> 22, 0, 255).astype(np.uint8)


def former_resize(image: np.ndarray, size: tuple[int, int], kind: str) -> np.ndarray:
    """The former ``pil_resize`` (same pass order)."""
    shrink_rows, shrink_cols = image.shape[0] - size[0], image.shape[1] - size[1]
    out = image
    for axis in (0, 1) if shrink_rows > 0 and shrink_rows > 2 * shrink_cols else (1, 0):
        if size[axis] != image.shape[axis]:
            out = _former_pass(out, size[axis], kind, axis)
    return np.ascontiguousarray(out)


def frame() -> np.ndarray:
    """A 640x480 RGB frame: skimage's astronaut cropped to 4:3 and resized with OpenCV (a real photo's
    statistics; any content times the same)."""
    from skimage import data

    return cv2.resize(data.astronaut()[:384], (640, 480), interpolation=cv2.INTER_LINEAR)


def variants(image: np.ndarray, size: tuple[int, int], kind: str) -> dict[str, Callable[[], np.ndarray]]:
    """Variant name -> a call resizing ``image`` to ``size`` (height, width)."""
    pil = Image.fromarray(image)
    return {"mmedge (banded float64 matmuls)": lambda: pil_resize(image, size, kind),
            "former int32 passes": lambda: former_resize(image, size, kind),
            "Pillow Image.resize": lambda: np.asarray(pil.resize(size[::-1], _PIL[kind])),
            "OpenCV cv2.resize (no antialiasing)": lambda: cv2.resize(image, size[::-1], interpolation=_CV2[kind])}


def _with_cpu(fn: Callable[[], np.ndarray]) -> Callable[[], float]:
    def call() -> float:
        start = time.thread_time()
        fn()
        return time.thread_time() - start
    return call


def main(argv: list[str] | None = None) -> int:
    """Prints one markdown table: per (size, filter, variant) median wall and CPU ms, max difference to Pillow."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=50)
    args = parser.parse_args(argv)
    image = frame()
    print("| resize 640x480 -> | filter | variant | p50 wall ms | p90 wall ms | p50 CPU ms "
          "| max diff to Pillow (levels) |")
    print("|---|---|---|---|---|---|---|")
    with threadpool_limits(1, user_api="blas"):
        for size in ((224, 298), (224, 224)):
            for kind in ("bicubic", "bilinear"):
                calls = variants(image, size, kind)
                reference = calls["Pillow Image.resize"]().astype(np.int16)
                cpu: dict[str, list[float]] = {name: [] for name in calls}
                samples = run_interleaved({name: _with_cpu(fn) for name, fn in calls.items()}, iters=args.iters,
                                          warmup=3, on_result=lambda name, s: cpu[name].append(1000 * s))
                for name, ms in samples.items():
                    stats = LatencyStats.from_samples(ms)
                    diff = int(np.abs(calls[name]().astype(np.int16) - reference).max())
                    print(f"| {size[1]}x{size[0]} | {kind} | {name} | {stats.p50:.2f} | {stats.p90:.2f} | "
                          f"{np.median(cpu[name]):.2f} | {diff} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
