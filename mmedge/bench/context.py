"""What a bench run measures on: the bundle's test split, the PyTorch checkpoint, and the
descriptions of bundle, settings and environment that go into the report."""
from __future__ import annotations

import hashlib
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmedge.bench.options import BenchOptions
from mmedge.errors import CheckpointError, DataError
from mmedge.runtime.probes import environment

__all__ = ["load_dataset", "load_test_split", "checkpoint_path", "bundle_info", "settings", "environment_info",
           "graph_bytes", "most_accurate_member"]


def load_dataset(bundle: Any, data: str | None) -> tuple[Any, str]:
    """The whole dataset a bench measures on (every split), and a description of its source.

    Args:
        bundle: The open ``Bundle``.
        data: A dataset name or JSONL file; None: the bundle's own dataset (``manifest["dataset"]``).

    Raises:
        DataError: the bundle names no dataset and none was given, or it lacks a modality the bundle needs.
    """
    from mmedge.datasets import build_dataset, list_datasets, load_jsonl

    spec = bundle.manifest.dataset
    if data is None and not spec:
        raise DataError(f"bundle {bundle.name!r} does not name its dataset (no manifest 'dataset'); pass "
                        f"--data with a JSONL file or one of {list_datasets()}")
    if data is not None and Path(data).suffix == ".jsonl":
        task = "matching" if bundle.task == "matching" else "classification"
        ds, source = load_jsonl(data, labels=list(bundle.labels), task=task), str(data)
    else:
        name, seed = (data, 0) if data is not None else (spec["name"], int(spec.get("seed", 0)))
        ds, source = build_dataset(name, seed=seed), f"{name} (seed {seed})"
    missing = [m for m in bundle.modalities if m not in ds.modalities and m not in bundle.optional_modalities]
    if missing:
        raise DataError(f"dataset {source} lacks {missing}, which bundle {bundle.name!r} needs")
    return ds, source


def load_test_split(bundle: Any, data: str | None) -> tuple[Any, str]:
    """The held-out test split of ``load_dataset``, and its source."""
    ds, source = load_dataset(bundle, data)
    return ds.split("test"), source


def checkpoint_path(opts: BenchOptions, bundle: Any, needed_by: str | None = None) -> Path:
    """The PyTorch checkpoint folder: ``--checkpoint``, else the bundle's ``source_checkpoint``.

    Args:
        needed_by: The flag that needs it, named in the error (default: ``--baseline <baseline>``).

    Raises:
        CheckpointError: no such folder, or not a checkpoint; the message says to pass ``--checkpoint``.
    """
    from mmedge.checkpoint import read_checkpoint_meta

    source = bundle.manifest.source_checkpoint
    candidates = [opts.checkpoint] if opts.checkpoint is not None else \
        [Path(source), bundle.source.parent / source] if source else []
    for path in candidates:
        if path.is_dir():
            read_checkpoint_meta(path)  # a typed error now, not after minutes of timing
            return path
    named = f"--checkpoint {opts.checkpoint} is not a folder" if opts.checkpoint else \
        f"the bundle's source_checkpoint {source} is not a folder" if source else \
        "the bundle names no source_checkpoint"
    raise CheckpointError(f"{needed_by or f'--baseline {opts.baseline}'} needs the PyTorch checkpoint, but {named}; "
                          "pass --checkpoint PATH (the folder `mmedge train` wrote)")


def bundle_info(bundle: Any, opts: BenchOptions) -> dict[str, Any]:
    source = Path(opts.bundle)
    files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
    pinned = source if source.is_file() else source / "manifest.json"
    return {"path": str(source), "name": bundle.name, "sha256": hashlib.sha256(pinned.read_bytes()).hexdigest(),
            "size_bytes": int(sum(p.stat().st_size for p in files)), "task": bundle.task,
            "modalities": list(bundle.modalities), "members": [m.name for m in bundle.members],
            "precisions": bundle.precisions(), "dataset": bundle.manifest.dataset,
            "accuracy_measured_on": {p: m["measured_on"] for p, m in bundle.manifest.metrics.items()
                                     if isinstance(m, dict) and "measured_on" in m},
            "export_accuracy": _export_accuracy(bundle.manifest.metrics)}


def _export_accuracy(metrics: Any) -> dict[str, Any]:
    """Ensemble accuracy of PyTorch and of every precision, as export measured it on its test rows."""
    found = {p: m["ensemble"] for p, m in metrics.items() if isinstance(m, dict) and "ensemble" in m}
    return {"samples": metrics.get("samples"), "ensemble": found} if found else {}


def settings(opts: BenchOptions) -> dict[str, Any]:
    out = {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
           for k, v in asdict(opts).items() if k not in ("bundle", "command")}
    return {**out, "text_cache_size": 0}


def environment_info(opts: BenchOptions, torch_threads: int | None = None) -> dict[str, Any]:
    """Machine, versions and threads; ``torch_threads``: those of the own-process baseline's child."""
    env = environment(opts.threads)
    if torch_threads is not None:
        env["threads"]["torch"] = int(torch_threads)
    elif opts.baseline == "torch" and "torch" in sys.modules:
        env["threads"]["torch"] = int(sys.modules["torch"].get_num_threads())
    return env


def graph_bytes(bundle: Any, precision: str, member: str | None) -> int:
    members = [bundle.member(member)] if member else list(bundle.members)
    used = {m for mb in members for m in mb.modalities}
    heads = [m.graphs[precision] for m in members]
    merged = (bundle.manifest.ensemble.graphs or {}).get(precision) if member is None else None
    if merged is not None:  # what the Session loads: the merged heads graph (and the heads, for optional modalities)
        heads = [merged, *(heads if bundle.optional_modalities else ())]
    entries = [e.graphs[precision] for k, e in bundle.encoders.items() if k in used] + heads
    return int(sum((bundle.root / e.file).stat().st_size for e in entries if e.file))


def most_accurate_member(bundle: Any) -> tuple[str | None, dict[str, Any]]:
    """The member with the highest accuracy on the whole validation split, and how it was chosen.

    Ties go to the member listed first in the bundle (said in the returned note). A bundle
    whose manifest has no validation accuracies (exported before mmedge recorded them) gets
    ``None``: no member is compared rather than one picked by another rule.
    """
    validation = bundle.manifest.metrics.get("validation") or {}
    scores = {m.name: validation["members"][m.name] for m in bundle.members
              if m.name in (validation.get("members") or {})}
    if len(scores) != len(bundle.members):
        return None, {"rule": "most accurate member on the validation split", "chosen": None,
                      "note": "the bundle records no validation accuracy per member; re-export it to compare"}
    best = max(scores, key=lambda n: scores[n])  # first in bundle order among equals
    ties = [n for n, v in scores.items() if v == scores[best] and n != best]
    return best, {"rule": "most accurate member on the validation split", "chosen": best,
                  "validation_samples": validation.get("samples"), "validation_accuracy": scores,
                  "note": f"tied with {ties}; the first in bundle order was taken" if ties else ""}
