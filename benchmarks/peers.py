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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("bundles/digits-av"))
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/digits-av"))
    ap.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib", type=int, default=64, help="training rows calibrating the ORT static peer")
    ap.add_argument("--eval", type=int, default=64, help="held-out rows for fidelity")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/peers.json"))
    args = ap.parse_args()

    from mmedge.bench.peers import run_peers

    report = run_peers(args.bundle, args.checkpoint, batches=args.batches, iters=args.iters, warmup=args.warmup,
                       threads=args.threads, calib=args.calib, eval=args.eval,
                       log=lambda msg: print(msg, flush=True), command=" ".join(["python", *sys.argv]))
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
