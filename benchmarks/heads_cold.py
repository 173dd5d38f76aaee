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

import numpy as np

EVICT_BYTES = 64 << 20  # more than the last-level cache of the CPUs this runs on (32 MiB here)


def _feeds(session: object, batch: int, sizes: dict[str, int]) -> dict[str, np.ndarray]:
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
    sessions = {f"{label}{name}": create_session(path, threads=args.threads)
                for i, bundle in enumerate(args.bundle)
                for label in [f"[{i}] " if len(args.bundle) > 1 else ""]
                for name, path in _graphs(bundle, args.precision).items()}
    buffer = np.zeros(EVICT_BYTES, np.uint8)
    sizes = {"tokens": args.tokens, "audio_steps": args.audio_steps}
    print(", ".join(f"[{i}] {b}" for i, b in enumerate(args.bundle)) + f"; {args.precision}, {args.threads} thread(s), "
          f"median ms of {args.iters} interleaved calls")
    for batch in (1, 8):
        feeds = {name: _feeds(s, batch, sizes) for name, s in sessions.items()}
        for mode in ("warm", "cold"):
            samples: dict[str, list[float]] = {name: [] for name in sessions}
            for _ in range(args.iters):
                for name, session in sessions.items():
                    if mode == "cold":
                        buffer += 1  # writes every line of the buffer: the caches now hold it
                    start = time.perf_counter()
                    session.run(None, feeds[name])
                    samples[name].append((time.perf_counter() - start) * 1000)
            print(f"  b{batch} {mode}: " + ", ".join(f"{n} {np.median(v):.3f}" for n, v in samples.items()))


if __name__ == "__main__":
    main()
