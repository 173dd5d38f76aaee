"""Accuracy of every precision of the whole ensemble (runtime on the held-out split), with
accuracy-aware fallback: sensitive components are kept in float until the drop is within
``max_drop``; a precision that still loses too much is marked failed, never shipped silently."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmedge.export.bundle_writer import write_bundle
from mmedge.export.components import Component, keep_float
from mmedge.export.manifest import bundle_files
from mmedge.export.mixed_precision import MIXED, choose_mixed, component_latencies
from mmedge.export.quantization import CPU_ACCURACY, policy
from mmedge.evaluation import TorchReference, evaluate_bundle, score
from mmedge.progress import log


def assess_precisions(manifest: dict[str, Any], comps: list[Component], src, work: Path, config) -> None:
    """Fills ``manifest["metrics"]`` and ``manifest["precisions"]`` (fallbacks applied in place);
    then, when asked for, picks the ``mixed`` graphs (``export.mixed_precision``)."""
    torch_ref = TorchReference(src.model, src.tokenizer_file)
    reference = score(torch_ref.predictor(src.data), src.test_rows, np.asarray(src.data.y))
    reference.pop("samples")
    ref_pred = reference.pop("predictions")
    manifest["metrics"].update(split="test", samples=int(len(src.test_rows)), pytorch=reference,
                               evaluated_with="mmedge.runtime.Session on ONNX Runtime (CPU)")
    _write_candidate(manifest, src, work)
    for precision in (p for p in config.precisions if p != MIXED):
        result, actions = _evaluate_with_fallback(manifest, comps, src, work, precision, reference["ensemble"], config)
        _record(manifest, precision, result, actions, reference, ref_pred, config)
    if MIXED in config.precisions:
        _assess_mixed(manifest, comps, src, work, config, reference, ref_pred)


def _record(manifest, precision: str, result: dict[str, Any], actions: list[str], reference, ref_pred, config) -> None:
    pred = result.pop("predictions")
    drop = 100.0 * (reference["ensemble"] - result["ensemble"])
    result.update(agreement_with_pytorch=float(np.mean(np.asarray(pred) == np.asarray(ref_pred))),
                  drop_points=drop, fallback=actions, measured_on=measured_on(precision))
    manifest["metrics"][precision] = result
    if result.pop("all_float", False):
        manifest["precisions"][precision] = "failed: every component had to stay fp32 to keep the accuracy"
    elif drop > config.max_drop:
        manifest["precisions"][precision] = (f"failed: ensemble accuracy {result['ensemble']:.4f} is {drop:.2f} points "
                                             f"below PyTorch ({reference['ensemble']:.4f}) > max_drop {config.max_drop}")
    log(f"  {precision}: ensemble accuracy {result['ensemble']:.4f} (PyTorch {reference['ensemble']:.4f}), "
        f"{manifest['precisions'][precision]}")


def _assess_mixed(manifest, comps: list[Component], src, work: Path, config, reference, ref_pred) -> None:
    log("  mixed: timing each component's fp32 / int8 / fp16 graphs (batch 1, interleaved)")
    latencies = component_latencies(comps, work, src.cases, threads=config.threads)

    def evaluate() -> tuple[dict[str, Any], float]:
        _write_candidate(manifest, src, work)
        result = _evaluate(src, work, MIXED, config.threads)
        return result, 100.0 * (reference["ensemble"] - result["ensemble"])

    result, _drop, choice, steps = choose_mixed(comps, latencies, evaluate, max_drop=config.max_drop)
    result["components"] = choice
    result["latency_ms_batch1"] = latencies
    _record(manifest, MIXED, result, steps, reference, ref_pred, config)


def measured_on(precision: str) -> str:
    """How export's accuracy figure of ``precision`` was obtained (a simulation is labelled so)."""
    return CPU_ACCURACY if precision in ("fp32", MIXED) else policy(precision).accuracy_measured_on


def _write_candidate(manifest, src, work: Path) -> None:
    """(Re)writes the bundle the runtime evaluates: once, and again after each fallback step."""
    write_bundle(work / "candidate", manifest, bundle_files(manifest, work, src.tokenizer_file))


def _evaluate(src, work: Path, precision: str, threads) -> dict[str, Any]:
    result = evaluate_bundle(work / "candidate", precision, src.data, src.test_rows, threads=threads)
    result.pop("samples")
    return result


def fallback_plan(comps: list[Component], precision: str) -> list[list[Component]]:
    """Groups kept in float one step at a time: the heads first (small, cheap in float), then
    encoders from the least faithful (lowest min cosine vs fp32) on."""
    heads = [c for c in comps if c.kind == "head"]
    encoders = sorted((c for c in comps if c.kind == "encoder"),
                      key=lambda c: c.graphs[precision].get("fidelity", {}).get("min_cosine", 1.0))
    return [heads] + [[e] for e in encoders]


def _evaluate_with_fallback(manifest, comps, src, work, precision, ref_acc, config) -> tuple[dict, list[str]]:
    result = _evaluate(src, work, precision, config.threads)
    actions: list[str] = []
    if precision == "fp32":
        return result, actions
    for group in fallback_plan(comps, precision):
        if 100.0 * (ref_acc - result["ensemble"]) <= config.max_drop:
            break
        for comp in group:
            keep_float(comp, precision, f"accuracy drop > {config.max_drop} points with {precision}")
        actions.append(f"kept {', '.join(c.key for c in group)} in fp32")
        _write_candidate(manifest, src, work)
        result = _evaluate(src, work, precision, config.threads)
    result["all_float"] = all("kept_float" in c.graphs[precision] for c in comps)
    return result, actions
