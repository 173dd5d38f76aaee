"""Accuracy of every precision of the whole ensemble (the runtime on the held-out split), with
accuracy control: components are reverted to fp32 until the drop is within ``max_drop``
(``export.accuracy_control``); a precision that still loses too much is marked failed, never
shipped silently. ``mixed`` is chosen by the same control (``export.mixed_precision``)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmedge.errors import MmedgeError
from mmedge.export.backend_check import checked_backends
from mmedge.export.accuracy_control import AccuracyControlReport, control_accuracy
from mmedge.export.bundle_writer import write_bundle
from mmedge.export.components import Component, keep_fp32
from mmedge.export.manifest_builder import build_manifest, bundle_files
from mmedge.export.mixed_precision import choose_mixed, component_latencies, mixed_candidates
from mmedge.evaluation import TorchReference, evaluate_bundle, score
from mmedge.progress import log
from mmedge.runtime.backends import resolve_backend
from mmedge.runtime.backends.placement import PLACED_ON
from mmedge.runtime.precisions import REFERENCE, PrecisionKind, get_precision

if TYPE_CHECKING:  # pragma: no cover
    from mmedge.export.exporter import ExportConfig
    from mmedge.export.sources import ExportSources

__all__ = ["PyTorchReference", "AccuracyRun", "assess_precisions", "measured_on"]


@dataclass(frozen=True)
class PyTorchReference:
    """The PyTorch ensemble on the held-out split: what every precision is compared with.

    Attributes:
        metrics: ``score``'s figures (``ensemble``, ``members``...).
        predictions: Its predicted labels, row by row.
    """

    metrics: dict[str, Any]
    predictions: np.ndarray

    @property
    def ensemble(self) -> float:
        """The ensemble's accuracy."""
        return float(self.metrics["ensemble"])

    def drop(self, result: dict[str, Any]) -> float:
        """How many points ``result``'s ensemble accuracy is below PyTorch's."""
        return 100.0 * (self.ensemble - result["ensemble"])


@dataclass(frozen=True)
class AccuracyRun:
    """One export's accuracy assessment: the reports it fills in, the components it updates, where
    the candidate bundle is written, the data, the settings and the PyTorch reference.

    Attributes:
        metrics: The manifest's ``metrics`` (filled in here).
        status: The manifest's ``precisions``: precision -> ``"ok"`` or why it failed.
        comps: The components (their graph entries are what the candidate bundle ships).
        src: The ``ExportSources`` (data, held-out rows, tokenizer).
        work: The export's work folder (the candidate bundle goes to ``work/candidate``).
        config: The ``ExportConfig`` (``max_drop``, ``threads``, ``precisions``).
        reference: PyTorch on the held-out split.
    """

    metrics: dict[str, Any]
    status: dict[str, str]
    comps: list[Component]
    src: "ExportSources"
    work: Path
    config: "ExportConfig"
    reference: PyTorchReference
    _written: dict[str, str] = field(default_factory=dict, repr=False)

    def write_candidate(self) -> None:
        """(Re)writes the bundle the runtime evaluates when its graph entries point at other files
        than when it was last written (once, then after each revert or ``mixed`` choice)."""
        files = json.dumps({c.key: {p: (e.file, e.backend) for p, e in c.graphs.items()} for c in self.comps})
        if self._written.get("files") != files:
            manifest = self.manifest()
            write_bundle(self.work / "candidate", manifest, bundle_files(manifest, self.work, self.src.tokenizer_file))
            self._written["files"] = files

    def manifest(self):
        """The manifest of the components and reports as they are now."""
        return build_manifest(self.src, self.comps, self.config, precisions=self.status, metrics=self.metrics)

    def evaluate(self, precision: str, backend: str = "ort") -> tuple[dict[str, Any], float]:
        """The runtime's figures of ``precision`` on ``backend``, on the candidate bundle (rewritten if
        needed), and the drop."""
        self.write_candidate()
        result = evaluate_bundle(self.work / "candidate", precision, self.src.data, self.src.test_rows,
                                 threads=self.config.threads, backend=backend)
        result.pop("samples")
        return result, self.reference.drop(result)

    def record(self, precision: str, report: AccuracyControlReport, *, fail_all_reference: bool = True) -> None:
        """Writes ``metrics[precision]`` and, when it failed, ``precisions[precision]``."""
        result = dict(report.result)
        pred = result.pop("predictions")
        result.update(agreement_with_pytorch=float(np.mean(np.asarray(pred) == self.reference.predictions)),
                      drop_points=report.drop, accuracy_reverts=report.step_texts(), measured_on=measured_on(precision))
        self.metrics[precision] = result
        status = self.status
        if fail_all_reference and report.all_reference and report.steps:
            status[precision] = "failed: every component had to stay fp32 to keep the accuracy"
        elif fail_all_reference and report.all_reference and precision != REFERENCE:
            status[precision] = "failed: every component had to stay fp32 (its own graphs could not be built)"
        elif not report.within_budget:
            status[precision] = (f"failed: ensemble accuracy {result['ensemble']:.4f} is {report.drop:.2f} points below "
                                 f"PyTorch ({self.reference.ensemble:.4f}) > max_drop {report.max_drop}")
        log(f"  {precision}: ensemble accuracy {result['ensemble']:.4f} (PyTorch {self.reference.ensemble:.4f}), "
            f"{status[precision]}")


def assess_precisions(comps: list[Component], src: "ExportSources", work: Path, config: "ExportConfig",
                      metrics: dict[str, Any], status: dict[str, str]) -> None:
    """Fills ``metrics`` and ``status`` (the manifest's ``metrics`` and ``precisions``; accuracy
    reverts applied to the components' graph entries); then picks the graphs of each selected
    precision asked for (``mixed``)."""
    torch_ref = TorchReference(src.model, src.tokenizer_file)
    torch_metrics = score(torch_ref.predictor(src.data), src.test_rows, np.asarray(src.data.y))
    torch_metrics.pop("samples")
    predictions = np.asarray(torch_metrics.pop("predictions"))
    metrics.update(split="test", samples=int(len(src.test_rows)), pytorch=torch_metrics,
                   evaluated_with="mmedge.runtime.Session on ONNX Runtime (CPU)")
    run = AccuracyRun(metrics, status, comps, src, work, config, PyTorchReference(torch_metrics, predictions))
    for precision in config.precisions:
        if get_precision(precision).kind is PrecisionKind.BUILT:
            _assess_built(run, precision)
    for precision in config.precisions:
        if get_precision(precision).kind is PrecisionKind.SELECTED:
            _assess_selected(run, precision)
    _assess_on_backends(run)


def _assess_built(run: AccuracyRun, precision: str) -> None:
    reason = f"accuracy drop > {run.config.max_drop} points with {precision}"
    report = control_accuracy(run.comps, precision, evaluate=lambda: run.evaluate(precision),
                              revert=lambda comp: keep_fp32(comp, precision, reason),
                              max_drop=run.config.max_drop)
    run.record(precision, report)


def _assess_selected(run: AccuracyRun, precision: str) -> None:
    """``mixed``: per component the fastest candidate graph and CPU backend, then accuracy control."""
    others = "".join(f", and on {b.name}" for b in checked_backends())
    log(f"  {precision}: timing each component's {' / '.join(mixed_candidates())} graphs on ort{others} "
        "(per row at batch 1 and 7, interleaved)")
    latencies = component_latencies(run.comps, run.work, run.src.cases, threads=run.config.threads)

    on_cpu = resolve_backend("auto").name == PLACED_ON  # auto places graphs (else it runs a GPU: not evaluated)

    def evaluate() -> tuple[dict[str, Any], float]:  # graphs placed on another CPU backend run there, as in an app
        placed = on_cpu and any(c.graphs[precision].backend for c in run.comps)
        return run.evaluate(precision, "auto" if placed else PLACED_ON)

    report, choice = choose_mixed(run.comps, latencies, evaluate, max_drop=run.config.max_drop, precision=precision)
    run.record(precision, report, fail_all_reference=False)
    run.metrics[precision].update(components=choice, latency_ms_per_row=latencies)
    placed = {c.key: c.graphs[precision].backend for c in run.comps if c.graphs[precision].backend}
    if placed and on_cpu:
        run.metrics[precision]["measured_on"] += f"; these graphs on the backend mixed placed them on: {placed}"


def _assess_on_backends(run: AccuracyRun) -> None:
    """Every shipped precision's accuracy on each backend export checks graphs on (OpenVINO when it is
    installed): ``metrics["backends"][<backend>][<precision>]``, shown by ``mmedge inspect``."""
    for backend in checked_backends():
        per: dict[str, Any] = {}
        for precision in (p for p in run.config.precisions if run.status.get(p) == "ok" and p in run.metrics):
            try:
                result, drop = run.evaluate(precision, backend.name)
            except MmedgeError as exc:
                per[precision] = {"error": " ".join(str(exc).split())[:300]}
                continue
            pred = np.asarray(result.pop("predictions"))
            per[precision] = {**result, "drop_points": drop,
                              "agreement_with_pytorch": float(np.mean(pred == run.reference.predictions))}
            log(f"  {precision} on {backend.name}: ensemble accuracy {result['ensemble']:.4f}")
        run.metrics.setdefault("backends", {})[backend.name] = per


def measured_on(precision: str) -> str:
    """How export's accuracy figure of ``precision`` was obtained (a simulation is labelled so)."""
    return get_precision(precision).accuracy_label
