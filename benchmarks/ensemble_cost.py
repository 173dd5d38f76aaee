"""What the ensemble costs over the member a user would deploy instead (issue 19 item 5), side by side.

One bundle of a reference recipe is timed in one interleaved run (``mmedge.runtime.timing.run_interleaved``),
per precision and batch, three ways through ``mmedge.runtime.Session`` (ONNX Runtime, ``--threads``):
the ensemble with its merged heads graph (every head and the rule as one graph: the bundle as export
writes it now), the same ensemble with separate heads (the bundle without ``ensemble.graphs``: how
older bundles run), and the member chosen on validation alone (the bench's rule:
``mmedge.bench.context.most_accurate_member``), from its own bundle: the same checkpoint exported as
when ensemble selection keeps that member alone (``member_bundle``: its head and rule as one graph).
The three share one set of encoder runners per precision (``share_encoders``: the same graphs, so the
same work; sessions of one graph differ by up to 20% within a run), so they differ only in what follows
the encoders, which is also timed (``heads_ms``). Inputs are real test rows, prepared once; the text
cache is off. Goal: ensemble / chosen member <= 1.05 at batch 1 and 8, every precision.

    nice python benchmarks/ensemble_cost.py --json benchmarks/ensemble_cost.json

By default it trains the ``digits-av`` recipe on a subset (``--subset``: the graphs, so the latency, are
those of the full recipe; only accuracy differs) with the ``stacking`` rule forced, so that every member
stays in the bundle (the costliest ensemble of distinct heads: ``--members``' default keeps the four heads,
one of each kind, and leaves the recipe's further seeds out), and exports fp32, fp16, int8 and mixed;
``--bundle`` times an existing bundle instead; ``--members`` keeps only some of the recipe's members (e.g.
those ensemble selection keeps by default: ``benchmarks/ensemble_seeds.json`` records them per run). The
JSON is rendered into RESULTS.md by ``benchmarks/make_results.py``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmedge.bench.fairness import DISTURBED_P90_OVER_P50 as DISTURBED  # the bench's rule

SCHEMA = "mmedge.ensemble_cost/1"
GOAL = 1.05  # ensemble p50 / chosen member p50
WAYS = ("merged", "separate", "member")
FOUR_HEADS = ("concat", "bilinear", "cross_attention", "contrastive")  # --members' default


def _bundle(args: argparse.Namespace) -> Path:
    """The bundle to time: ``--bundle``, else the recipe trained and exported under ``--work``."""
    from mmedge.config import get_recipe
    from mmedge.export.exporter import ExportConfig, export_checkpoint
    from mmedge.runtime.ensemble import EnsembleMethod
    from mmedge.training import train_recipe

    if args.bundle is not None:
        return args.bundle
    checkpoint, bundle = args.work / "checkpoint", args.work / "bundle"
    if not checkpoint.is_dir():
        recipe = get_recipe(args.recipe)
        if args.members:
            unknown = set(args.members) - {mb.name for mb in recipe.members}
            if unknown:
                raise SystemExit(f"--members: {sorted(unknown)} not in {args.recipe} ({[mb.name for mb in recipe.members]})")
            recipe = recipe.replace(members=tuple(mb for mb in recipe.members if mb.name in args.members))
        train_recipe(recipe.replace(subset=args.subset, ensemble=EnsembleMethod.STACKING, baselines=False,
                                    train=dataclasses.replace(recipe.train, epochs=args.epochs,
                                                              encoder_epochs=args.encoder_epochs)), checkpoint)
    if not (bundle / "manifest.json").is_file():
        export_checkpoint(checkpoint, bundle, config=_export_config(args))
    return bundle


def cpu_precisions() -> tuple[str, ...]:
    """Export's default precisions but the ones made for another backend (TensorRT's Q/DQ graphs, which
    ONNX Runtime only simulates)."""
    from mmedge.export.quantization import export_precisions
    from mmedge.runtime.precisions import MeasuredOn, get_precision

    return tuple(p for p in export_precisions() if get_precision(p).measured_on is not MeasuredOn.SIMULATED)


def _export_config(args: argparse.Namespace) -> Any:
    from mmedge.export.exporter import ExportConfig

    return ExportConfig(precisions=tuple(args.precisions), eval_samples=args.eval_samples, threads=args.threads)


def member_bundle(args: argparse.Namespace, member: str) -> Path | None:
    """The chosen member alone, exported from the same checkpoint as when ensemble selection keeps only
    it (weight 1, the others 0 and so left out): its head and rule as one graph, as a user would deploy
    it. None with ``--bundle`` (no checkpoint): the member then runs from the ensemble's bundle
    (``Session(members=[member])``: its separate head and the numpy rule)."""
    from mmedge.export.exporter import export_checkpoint

    if args.bundle is not None:
        return None
    work = args.work / f"member-{member}"
    checkpoint, bundle = work / "checkpoint", work / "bundle"
    if not (bundle / "manifest.json").is_file():
        if checkpoint.exists():
            shutil.rmtree(checkpoint)
        shutil.copytree(args.work / "checkpoint", checkpoint)
        meta = json.loads((checkpoint / "recipe.json").read_text())
        for m in meta["members"]:
            m["weight"] = 1.0 if m["name"] == member else 0.0
        meta["ensemble"] = {"method": "weighted_mean"}
        (checkpoint / "recipe.json").write_text(json.dumps(meta, indent=2))
        export_checkpoint(checkpoint, bundle, config=_export_config(args))
    return bundle


def separate_heads_copy(bundle: Path, dst: Path) -> Path:
    """The bundle without its merged heads graph (``ensemble.graphs`` and its files): as older bundles run."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(bundle, dst, ignore=shutil.ignore_patterns("engines"))
    manifest = json.loads((dst / "manifest.json").read_text())
    merged = {e["file"] for e in (manifest["ensemble"].pop("graphs", None) or {}).values()}
    manifest["files"] = {k: v for k, v in manifest["files"].items() if k not in merged}
    for rel in merged:
        (dst / rel).unlink(missing_ok=True)
    for folder in {(dst / rel).parent for rel in merged}:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return dst


def _sessions(bundle: Path, separate: Path, alone: Path | None, precision: str, member: str, threads: int
              ) -> dict[str, Any]:
    """The three ways at one precision, on one set of encoder runners (see ``share_encoders``)."""
    from mmedge.runtime import Session

    common = dict(precision=precision, backend="ort", threads=threads, text_cache_size=0)
    ways = {"merged": Session(bundle, **common), "separate": Session(separate, **common),
            "member": Session(alone, **common) if alone else Session(bundle, members=[member], **common)}
    for way in ("separate", "member"):
        share_encoders(ways["merged"], ways[way])
    return ways


def share_encoders(source: Any, target: Any) -> None:
    """Makes ``target`` run ``source``'s encoder runners (the same graphs, precision and threads), freeing its
    own. Sessions of one graph differ by up to 20% within a run (where the runtime's allocations land); the
    encoders are the same work for the ensemble and the member, so the ways share them and differ only in
    what follows the encoders. Closing both Sessions is safe (``deactivate`` is idempotent)."""
    for name, runner in source._runners.items():
        if name.startswith("encoder."):
            target._runners[name].deactivate()
            target._runners[name] = runner


def _stats(samples: list[float], batch: int) -> dict[str, float]:
    p50, p90 = float(np.percentile(samples, 50)), float(np.percentile(samples, 90))
    return {"p50_ms": p50, "p90_ms": p90, "per_sample_ms": p50 / batch, "p90_over_p50": p90 / p50}


def paired_ratio(num: list[float], den: list[float]) -> dict[str, float]:
    """Median and quartiles of ``num[i] / den[i]``: samples of the same interleaved iteration, taken
    within one pass over the configurations, so a slow spell of the shared machine moves both."""
    ratios = np.asarray(num) / np.asarray(den)
    return {"median": float(np.median(ratios)), "q25": float(np.percentile(ratios, 25)),
            "q75": float(np.percentile(ratios, 75))}


def _heads_ms(stages: list[dict[str, float]]) -> float:
    """Median ms of what follows the encoders in one call: the heads (merged graph or one per member) and
    the numpy rule when it runs."""
    return float(np.median([sum(v for k, v in t.items() if k in ("heads", "ensemble") or k.startswith("head."))
                            for t in stages]))


def measure(bundle: Path, separate: Path, alone: Callable[[str], Path | None], *, precisions: list[str],
            batches: list[int], iters: int, warmup: int, threads: int, seed: int = 0
            ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every (precision, way) timed interleaved per batch; one row per (precision, batch)."""
    from mmedge.bench.context import load_test_split, most_accurate_member
    from mmedge.evaluation import raw_inputs
    from mmedge.runtime import Bundle
    from mmedge.runtime.timing import run_interleaved

    with Bundle.open(bundle) as opened:
        member, choice = most_accurate_member(opened)
        data, _ = load_test_split(opened, None)
        modalities, runners = opened.modalities, {}
    if member is None:
        raise SystemExit(f"{bundle} records no validation accuracy per member: re-export it")
    member_alone = alone(member)
    member_not_ok = _bundle_info(member_alone)["not_ok"] if member_alone else {}
    precisions = [p for p in precisions if p not in member_not_ok]  # the member's own bundle lacks them
    sessions = {p: _sessions(bundle, separate, member_alone, p, member, threads) for p in precisions}
    for p, ways in sessions.items():
        runners[p] = {w: sorted(s._runners) for w, s in ways.items()}
    rows = []
    try:
        for batch in batches:
            inputs = raw_inputs(data, [i % len(data) for i in range(batch)], modalities)
            fns = {f"{p}/{w}": (lambda s=s: s.predict(**inputs)) for p, ways in sessions.items() for w, s in ways.items()}
            stages: dict[str, list[dict[str, float]]] = {name: [] for name in fns}
            samples = run_interleaved(fns, iters=iters, warmup=warmup, rng_seed=seed + batch,
                                      on_result=lambda name, pred: stages[name].append(pred.timings_ms))
            for p in precisions:
                rows.append(_row(p, batch, {w: samples[f"{p}/{w}"] for w in WAYS},
                                 {w: _heads_ms(stages[f"{p}/{w}"]) for w in WAYS}))
    finally:
        for ways in sessions.values():
            for s in ways.values():
                s.close()
    return rows, {"member": member, "choice": choice, "runners": runners,
                  "member_bundle": str(member_alone) if member_alone else None, "member_not_ok": member_not_ok}


def _row(precision: str, batch: int, samples: dict[str, list[float]], heads_ms: dict[str, float]) -> dict[str, Any]:
    stats = {w: _stats(samples[w], batch) for w in WAYS}
    return {"precision": precision, "batch": batch, **stats,
            "ensemble_over_member": stats["merged"]["p50_ms"] / stats["member"]["p50_ms"],
            "paired_ensemble_over_member": paired_ratio(samples["merged"], samples["member"]),
            "separate_over_member": stats["separate"]["p50_ms"] / stats["member"]["p50_ms"],
            "merged_over_separate": stats["merged"]["p50_ms"] / stats["separate"]["p50_ms"],
            "heads_ms": heads_ms,
            "disturbed": any(stats[w]["p90_over_p50"] > DISTURBED for w in WAYS)}


def _bundle_info(bundle: Path) -> dict[str, Any]:
    from mmedge.runtime import Bundle

    with Bundle.open(bundle) as b:
        ens = b.manifest.ensemble
        return {"path": str(bundle), "name": b.name, "members": [m.name for m in b.members], "rule": ens.method,
                "precisions": b.precisions(), "not_ok": {p: b.precision_problem(p) for p in b.precision_status
                                                         if p not in b.precisions()},
                "merged_graphs": {p: g.file for p, g in (ens.graphs or {}).items()},
                "merged_parity_max_abs_diff": {p: g.parity["max_abs_diff"] for p, g in (ens.graphs or {}).items()
                                               if g.parity}}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="time this bundle (default: train and export --recipe)")
    parser.add_argument("--recipe", default="digits-av")
    parser.add_argument("--members", type=lambda s: s.split(","), default=list(FOUR_HEADS),
                        help="keep only these members of the recipe (e.g. the ones selection kept); default: the four "
                             "heads, one of each kind (the recipe's further seeds left out)")
    parser.add_argument("--subset", type=int, default=600, help="rows of the recipe's dataset to train on")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--encoder-epochs", type=int, default=3)
    parser.add_argument("--eval-samples", type=int, default=100, help="export's accuracy rows per precision")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mmedge-ensemble-cost"))
    parser.add_argument("--precisions", type=lambda s: s.split(","), default=list(cpu_precisions()),
                        help="default: every precision export makes by default that ONNX Runtime's CPU runs as built")
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/ensemble_cost.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the comparison and writes the JSON (atomically); returns the report."""
    from mmedge.atomic import atomic_write

    args = _parse(argv)
    start = time.time()
    bundle = _bundle(args)
    separate = separate_heads_copy(bundle, args.work / "separate-heads")
    precisions = [p for p in args.precisions if p in _bundle_info(bundle)["precisions"]]
    rows, chosen = measure(bundle, separate, lambda member: member_bundle(args, member), precisions=precisions,
                           batches=args.batches, iters=args.iters, warmup=args.warmup, threads=args.threads)
    report = {"schema": SCHEMA, "command": "python benchmarks/ensemble_cost.py " + " ".join(argv or sys.argv[1:]),
              "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "goal": GOAL,
              "disturbed_p90_over_p50": DISTURBED, "seconds": round(time.time() - start, 1),
              "recipe": None if args.bundle else {"name": args.recipe, "subset": args.subset, "rule": "stacking (forced)",
                                                  "members": args.members},
              "bundle": _bundle_info(bundle), **chosen, "rows": rows,
              "environment": {"machine": platform.machine(), "processor": platform.processor(),
                              "cpus": os.cpu_count(), "threads": args.threads, "iters": args.iters,
                              "warmup": args.warmup, "load_average": os.getloadavg()}}
    atomic_write(args.json, json.dumps(report, indent=2) + "\n")
    for r in rows:
        print(f"{r['precision']:>6} b{r['batch']}: ensemble/member {r['ensemble_over_member']:.3f}x (paired "
              f"{r['paired_ensemble_over_member']['median']:.3f}x; after the encoders {r['heads_ms']['merged']:.2f} vs "
              f"{r['heads_ms']['member']:.2f} ms), separate heads/"
              f"member {r['separate_over_member']:.3f}x, merged/separate {r['merged_over_separate']:.3f}x"
              + (" (disturbed)" if r["disturbed"] else ""))
    return report


if __name__ == "__main__":
    main()
