"""Encoders at once vs in turn (``Session(encoder_lanes=)``, ``mmedge.runtime.encoder_lanes``), side by side.

For each precision and backend, two Sessions of one bundle: the default (on a CPU backend, one lane per
encoder up to ``--threads``, each encoder graph on its share of the threads) and ``encoder_lanes=1`` (the
encoders one after another, each on every thread: the runtime before lanes). Both predict the same real
test rows, interleaved (``mmedge.runtime.timing.run_interleaved``), text cache off, one BLAS thread for
numpy in this process. Prints and writes p50 / p90 per batch and the ratio lanes / in turn.

    python benchmarks/encoder_lanes.py --bundle bundles/digits-av --json benchmarks/encoder_lanes.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bench.fairness import DISTURBED_P90_OVER_P50 as DISTURBED  # the bench's rule

SCHEMA = "mmedge.encoder_lanes/1"


def _stats(samples: list[float]) -> dict[str, float]:
    p50, p90 = float(np.percentile(samples, 50)), float(np.percentile(samples, 90))
    return {"p50_ms": p50, "p90_ms": p90, "p90_over_p50": p90 / p50}


def measure(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row per (precision, backend, batch): both ways' figures and lanes / in turn. The two Sessions
    of one precision and backend are interleaved with each other (not with the other pairs: a call
    after another Session's finds its weights out of the CPU caches, which no app's loop does)."""
    from mmedge.bench.context import load_test_split
    from mmedge.evaluation import raw_inputs
    from mmedge.runtime import Bundle

    with Bundle.open(args.bundle) as opened:
        data, _ = load_test_split(opened, None)
        modalities = opened.modalities
    inputs = {b: raw_inputs(data, [i % len(data) for i in range(b)], modalities) for b in args.batches}
    rows, plans = [], {}
    for p in args.precisions:
        for b in args.backends:
            pair_rows, plans[f"{p}/{b}"] = _pair(args, p, b, inputs)
            rows += pair_rows
    return rows, plans


def _pair(args: argparse.Namespace, precision: str, backend: str, inputs: dict[int, dict[str, Any]]
          ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from mmedge.runtime import Session
    from mmedge.runtime.timing import run_interleaved

    ways = {"lanes": None, "in_turn": 1}
    sessions = {w: Session(args.bundle, precision=precision, backend=backend, encoder_lanes=lanes,
                           threads=args.threads, text_cache_size=0) for w, lanes in ways.items()}
    plans = {w: {**dataclasses.asdict(s.lane_plan), "backends": s.backends} for w, s in sessions.items()}
    rows = []
    try:
        for batch, feed in inputs.items():
            fns = {w: (lambda s=s: s.predict(**feed)) for w, s in sessions.items()}
            stats = {w: _stats(v) for w, v in run_interleaved(fns, iters=args.iters, warmup=args.warmup,
                                                              rng_seed=batch).items()}
            rows.append({"precision": precision, "backend": backend, "batch": batch, **stats,
                         "lanes_over_in_turn": stats["lanes"]["p50_ms"] / stats["in_turn"]["p50_ms"],
                         "disturbed": any(v["p90_over_p50"] > DISTURBED for v in stats.values())})
    finally:
        for s in sessions.values():
            s.close()
    return rows, plans


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the comparison, prints it, writes ``--json`` (atomically); returns the report."""
    from mmedge.atomic import atomic_write
    from mmedge.runtime.blas_threads import BlasLimit
    from mmedge.runtime.cpu import cpu_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("bundles/digits-av"))
    ap.add_argument("--precisions", type=lambda s: s.split(","), default=["fp32", "int8", "mixed"])
    ap.add_argument("--backends", type=lambda s: s.split(","), default=["ort", "auto"])
    ap.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    start = time.time()
    with BlasLimit(1):
        rows, plans = measure(args)
    report = {"schema": SCHEMA, "command": "python benchmarks/encoder_lanes.py " + " ".join(argv or sys.argv[1:]),
              "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": round(time.time() - start, 1),
              "bundle": str(args.bundle), "plans": plans, "rows": rows,
              "environment": {"machine": platform.machine(), "cpu": cpu_model(), "cpus": os.cpu_count(),
                              "threads": args.threads, "iters": args.iters, "load_average": os.getloadavg()}}
    for r in rows:
        print(f"{r['precision']:>6}/{r['backend']:<5} b{r['batch']}: lanes {r['lanes']['p50_ms']:.2f} ms, in turn "
              f"{r['in_turn']['p50_ms']:.2f} ms: {r['lanes_over_in_turn']:.3f}x" + (" (disturbed)" if r["disturbed"] else ""))
    if args.json is not None:
        atomic_write(args.json, json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
