"""Every encoder of a bundle against the recipe a user would ship instead, in one run.

A thin command line over ``mmedge.bench.peers.run_peers`` (which documents what is timed and
the ``mmedge.peers/1`` JSON it writes; ``benchmarks/make_results.py`` renders it into
RESULTS.md). ``mmedge bench BUNDLE --peers`` runs the same comparison next to the bench.

    python benchmarks/peers.py --bundle bundles/digits-av --checkpoint runs/digits-av --json benchmarks/peers.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmedge.bench.options import BenchOptions, option_default

# The reference run's settings (RESULTS.md quotes them); the rest are BenchOptions' own defaults.
REFERENCE = {"bundle": Path("bundles/digits-av"), "checkpoint": Path("runs/digits-av"), "batches": (1, 8),
             "iters": 60, "warmup": 10, "threads": 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=REFERENCE["bundle"])
    ap.add_argument("--checkpoint", type=Path, default=REFERENCE["checkpoint"])
    ap.add_argument("--batches", type=lambda s: tuple(int(x) for x in s.split(",")), default=REFERENCE["batches"])
    for name in ("iters", "warmup", "threads"):
        ap.add_argument(f"--{name}", type=int, default=REFERENCE[name])
    ap.add_argument("--calib", type=int, default=option_default("peer_calib"),
                    help="training rows calibrating the ORT static peer")
    ap.add_argument("--eval", type=int, default=option_default("peer_eval"), help="held-out rows for fidelity")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/peers.json"))
    args = ap.parse_args()

    from mmedge.bench.peers import run_peers

    opts = BenchOptions(bundle=args.bundle, checkpoint=args.checkpoint, batches=args.batches, iters=args.iters,
                        warmup=args.warmup, threads=args.threads, peers=True, peer_calib=args.calib,
                        peer_eval=args.eval, command=("python", *sys.argv))
    report = run_peers(opts, args.checkpoint, log=lambda msg: print(msg, flush=True))
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
