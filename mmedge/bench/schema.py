"""The ``mmedge.bench/1`` report: its schema, derived comparisons, validation and writing.

JSON report, ``"schema": "mmedge.bench/1"`` (``validate_report`` checks it)::

    schema        "mmedge.bench/1"
    created_utc   ISO date;  command: argv list
    settings      precisions, backends, batches, iters, warmup, threads, baseline, checkpoint,
                  data, accuracy_samples, members_compare, seed, text_cache_size
    environment   python, platform, cpu_model, cpu_count_logical/physical, versions{...},
                  env{OMP_NUM_THREADS, ...}, threads{ort_intra_op, torch}, ort_providers
    bundle        path, name, sha256 (of manifest.json, which pins every file; of the zip for a
                  .mmedge), size_bytes, task, modalities, members, precisions, dataset
    data          source, split, rows (test rows available), timing_rows{batch: [row ids]}
    import        [{statement, median_ms, samples_ms, torch_imported}]  (fresh interpreters)
    peak          fp32 / int8 (ONNX Runtime MatMul probe at the bench's threads; null without
                  onnx), numpy_fp32: {gops, size, method}
    flops         per_sample{component: {flops, macs, ...}} | null, note
    member_choice rule ("most accurate member on the validation split"), chosen | null,
                  validation_samples, validation_accuracy{member: acc}, note
    configs       [{id, kind: ensemble|member|torch, precision, backend, batch, members, threads,
                    lanes{lanes, graph_threads, reason} | null (the Session's encoder lanes), load_ms,
                    rss_delta_bytes, graph_bytes, latency_ms{n, batch, p50, p90, p99,
                    mean, min, max, std, throughput_per_s}, stages_ms{stage: same}, samples_ms,
                    flops_per_sample, roofline{peak_gops, peak_kind, e2e{...}, compute{...}} | null,
                    pid (only "torch/eager (own process)", timed alone in a child process),
                    p90_over_p50, disturbed (p90/p50 > 1.3: mmedge.bench.fairness)}]
    accuracy      {"<precision>/<backend>" | "torch/eager": {samples, ensemble, members{}}}
    comparisons   [{name, batch, numerator, denominator, ratio_p50, stage_ratios_p50{}}]
    fairness      blas_threads (1: both sides), text_padding{runtime, pytorch: {modality: bucket}},
                  thread_settings{side: {pools[{user_api, internal_api, num_threads}], blas_threads,
                  env{}, torch_intra_op?, ort_intra_op?}}, disturbed_p90_over_p50, disturbed[ids]
    background_load (only with --background-load) mmedge.bench.background: workload, configs{id:
                  {without{p50, p90, p99}, with{...}, p99_ratio, p90_over_p50_with}}
    memory        rss_start_bytes, rss_end_bytes, peak_rss_bytes (this process: it may hold torch),
                  torch_free_process{precision: {backend, rss_after_import/load/predict_bytes,
                  peak_rss_bytes, start_ms, import_ms, load_ms, first_predict_ms, first_prediction_s,
                  heavy_modules_imported, modules_loaded, first_start{first_prediction_s, load_ms,
                  peak_rss_bytes}}}
                  (a fresh interpreter where importing torch fails: mmedge.runtime.footprint; started
                  twice: the figures are the second start's, first_start the first's, which after an
                  install or export also verifies the bundle and writes ONNX Runtime's graph cache)
    device        tegrastats: {available, ...}
    peers         (only with --peers) the ``mmedge.peers/1`` report of ``mmedge.bench.peers``
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["SCHEMA", "PEERS_SCHEMA", "comparisons", "validate_report", "validate_peers", "write_json"]

SCHEMA = "mmedge.bench/1"
PEERS_SCHEMA = "mmedge.peers/1"


def _ratio(a: Mapping[str, Any], b: Mapping[str, Any], name: str) -> dict[str, Any]:
    shared = sorted(set(a["stages_ms"]) & set(b["stages_ms"]))
    return {"name": name, "batch": a["batch"], "numerator": a["id"], "denominator": b["id"],
            "ratio_p50": a["latency_ms"]["p50"] / b["latency_ms"]["p50"],
            "stage_ratios_p50": {k: a["stages_ms"][k]["p50"] / b["stages_ms"][k]["p50"] for k in shared
                                 if b["stages_ms"][k]["p50"] > 0}}


def comparisons(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ratios of medians between configuration records of one run, per batch size.

    Runtime ensemble / each PyTorch record (``kind: torch``: eager timed in this process or, with
    ``--baseline torch-process``, in its own, where ``--torch-compile`` adds torch.compile), each precision / fp32 on the same backend, and the
    ensemble / its most accurate member on the validation split; each with per-stage ratios
    of the stages both have.
    """
    out = []
    by_batch: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        by_batch.setdefault(r["batch"], []).append(r)
    for group in by_batch.values():
        torch_recs = [r for r in group if r["kind"] == "torch"]
        ensembles = [r for r in group if r["kind"] == "ensemble"]
        fp32 = {r["backend"]: r for r in ensembles if r["precision"] == "fp32"}
        for r in ensembles:
            where = f"{r['precision']}/{r['backend']}"
            out += [_ratio(r, t, f"runtime {where} / {_torch_label(t)}") for t in torch_recs]
            if r["precision"] != "fp32" and r["backend"] in fp32:
                out.append(_ratio(r, fp32[r["backend"]], f"{where} / fp32/{r['backend']}"))
            member = next((m for m in group if m["kind"] == "member" and m["id"].startswith(where + "/")), None)
            if member is not None:
                out.append(_ratio(r, member, f"ensemble {where} / most accurate member on validation "
                                             f"({member['members'][0]})"))
    return out


def _torch_label(record: Mapping[str, Any]) -> str:
    """``torch/eager/b1`` -> ``PyTorch eager``; ``torch/compile (own process)/b1`` -> ``PyTorch compile (own process)``."""
    return "PyTorch " + record["id"].rsplit("/b", 1)[0].split("/", 1)[-1]


_TOP = {"schema": str, "created_utc": str, "command": list, "settings": dict, "environment": dict, "bundle": dict,
        "data": dict, "import": list, "peak": dict, "flops": dict, "configs": list, "accuracy": dict,
        "comparisons": list, "memory": dict, "device": dict}
_CONFIG = {"id": str, "kind": str, "precision": str, "backend": str, "batch": int, "members": list, "threads": int,
           "load_ms": (int, float), "rss_delta_bytes": int, "latency_ms": dict, "stages_ms": dict,
           "samples_ms": list, "roofline": (dict, type(None))}
_NUMBER = (int, float)


def _check_keys(obj: Any, spec: Mapping[str, Any], where: str) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where} must be an object"]
    errors = [f"{where}.{k} is missing" for k in spec if k not in obj]
    errors += [f"{where}.{k} must be {t}" for k, t in spec.items() if k in obj and not isinstance(obj[k], t)]
    return errors


def _check_stats(stats: Any, where: str) -> list[str]:
    spec = {k: _NUMBER for k in ("n", "batch", "p50", "p90", "p99", "mean", "min", "max", "std", "throughput_per_s")}
    errors = _check_keys(stats, spec, where)
    if not errors and not stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]:
        errors.append(f"{where}: expected min <= p50 <= p90 <= p99 <= max")
    return errors


def validate_report(report: Any) -> list[str]:
    """Checks a ``mmedge bench`` JSON report against ``mmedge.bench/1``; returns the problems (empty: valid)."""
    errors = _check_keys(report, _TOP, "report")
    if errors:
        return errors
    if report["schema"] != SCHEMA:
        errors.append(f"report.schema is {report['schema']!r}, expected {SCHEMA!r}")
    env = report["environment"]
    errors += _check_keys(env, {"cpu_model": str, "versions": dict, "env": dict, "threads": dict}, "environment")
    errors += _check_keys(report["bundle"], {"sha256": str, "size_bytes": int, "path": str}, "bundle")
    if "fairness" in report:  # reports written before the fair-baseline rules have none
        errors += _check_keys(report["fairness"], {"blas_threads": int, "text_padding": dict,
                                                   "thread_settings": dict, "disturbed": list}, "fairness")
    for i, cfg in enumerate(report["configs"]):
        where = f"configs[{i}]"
        errs = _check_keys(cfg, _CONFIG, where)
        if not errs:
            errs += _check_stats(cfg["latency_ms"], f"{where}.latency_ms")
            errs += [e for k, v in cfg["stages_ms"].items() for e in _check_stats(v, f"{where}.stages_ms.{k}")]
            if len(cfg["samples_ms"]) != cfg["latency_ms"]["n"]:
                errs.append(f"{where}: samples_ms has {len(cfg['samples_ms'])} values, latency_ms.n is "
                            f"{cfg['latency_ms']['n']}")
            errs += _check_keys(cfg, {"pid": int} if "pid" in cfg else {}, where)
        errors += errs
    for i, c in enumerate(report["comparisons"]):
        errors += _check_keys(c, {"name": str, "batch": int, "ratio_p50": _NUMBER, "numerator": str,
                                  "denominator": str}, f"comparisons[{i}]")
    return errors + (validate_peers(report["peers"], "peers") if "peers" in report else [])


_PEERS = {"schema": str, "command": str, "created_utc": str, "threads": int, "iters": int, "warmup": int,
          "peaks_gops": dict, "encoders": dict}


def validate_peers(peers: Any, where: str = "report") -> list[str]:
    """Checks a ``mmedge.peers/1`` report (``mmedge.bench.peers.run_peers``); returns the problems."""
    errors = _check_keys(peers, _PEERS, where)
    if errors:
        return errors
    if peers["schema"] != PEERS_SCHEMA:
        errors.append(f"{where}.schema is {peers['schema']!r}, expected {PEERS_SCHEMA!r}")
    for m, enc in peers["encoders"].items():
        at = f"{where}.encoders.{m}"
        errs = _check_keys(enc, {"encoder": str, "fidelity_vs_pytorch_fp32": dict, "batches": dict}, at)
        for b, entry in ({} if errs else enc["batches"]).items():
            errs += _check_keys(entry, {"median_ms": dict, "flops": _NUMBER}, f"{at}.batches.{b}")
            if not errs and set(entry["median_ms"]) != set(enc["fidelity_vs_pytorch_fp32"]):
                errs.append(f"{at}.batches.{b}: median_ms and fidelity name different variants")
        errors += errs
    return errors


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj


def write_json(report: Mapping[str, Any], path: str | Path) -> Path:
    """Writes ``report`` as indented JSON (non-finite numbers as null); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(report), indent=1) + "\n", encoding="utf-8")
    return path
