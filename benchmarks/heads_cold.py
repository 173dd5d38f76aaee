"""What a bundle's head graphs cost on ONNX Runtime with warm and with cold caches, side by side.

In a Session the heads run right after the encoders, whose weights have pushed the heads' out of the
caches, so at batch 1 a head's time is mostly its weights read from memory. This times every head graph
of one precision (each member's and the merged heads graph) interleaved, ``warm`` (nothing evicted
between calls) and ``cold`` (a pass over a buffer larger than the last-level cache before each call),
at batch 1 and 8, on feature inputs of the bundle's own shapes (random values; the images' 64 patches,
``--tokens`` text tokens, ``--audio-steps`` audio steps).

    python benchmarks/heads_cold.py --bundle bundles/digits-av [--bundle other] [--precision fp32] [--threads 1]

Several ``--bundle`` (e.g. exported before and after a change to a head) are timed in the same run,
interleaved: quote their ratios, not the times.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

EVICT_BYTES = 64 << 20  # more than the last-level cache of the CPUs this runs on (32 MiB here)


def _feeds(session: Any, batch: int, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for i in session.get_inputs():
        shape = [sizes.get(d, batch) if isinstance(d, str) else d for d in i.shape]
        out[i.name] = np.ones(shape, np.float32) if i.name.endswith("_mask") else rng.standard_normal(shape, np.float32)
    return out


def _graphs(bundle: Path, precision: str) -> dict[str, Path]:
    from mmedge.runtime import Bundle

    with Bundle.open(bundle) as b:
        graphs = {m.name: b.root / m.graphs[precision].file for m in b.members if precision in m.graphs}
        merged = (b.manifest.ensemble.graphs or {}).get(precision)
        if merged is not None:
            graphs["merged heads"] = b.root / merged.file
    return graphs


def _median_ms(sessions: dict[str, Any], feeds: dict[str, dict[str, np.ndarray]], iters: int,
               evict: np.ndarray | None) -> dict[str, float]:
    """Every session once per pass, in turn, ``iters`` passes; ``evict``: written before each call."""
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(iters):
        for name, session in sessions.items():
            if evict is not None:
                evict += 1  # writes every line of the buffer: the caches now hold it
            start = time.perf_counter()
            session.run(None, feeds[name])
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: float(np.median(v)) for name, v in samples.items()}


def main(argv: list[str] | None = None) -> None:
    """Prints median ms per call, warm and cold, per head graph and batch."""
    from mmedge.runtime.backends.ort import create_session

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, action="append", required=True, help="repeat to compare bundles")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (a Session's heads: 1 in lanes)")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--audio-steps", type=int, default=13)
    parser.add_argument("--iters", type=int, default=200)
    args = parser.parse_args(argv)
    sessions = {}
    for i, bundle in enumerate(args.bundle):
        label = f"[{i}] " if len(args.bundle) > 1 else ""
        for name, path in _graphs(bundle, args.precision).items():
            sessions[label + name] = create_session(path, threads=args.threads)
    sizes = {"tokens": args.tokens, "audio_steps": args.audio_steps}
    print(", ".join(f"[{i}] {b}" for i, b in enumerate(args.bundle)) + f"; {args.precision}, {args.threads} thread(s), "
          f"median ms of {args.iters} interleaved calls")
    for batch in (1, 8):
        feeds = {name: _feeds(s, batch, sizes) for name, s in sessions.items()}
        for mode, evict in (("warm", None), ("cold", np.zeros(EVICT_BYTES, np.uint8))):
            ms = _median_ms(sessions, feeds, args.iters, evict)
            print(f"  b{batch} {mode}: " + ", ".join(f"{n} {v:.3f}" for n, v in ms.items()))


if __name__ == "__main__":
    main()
