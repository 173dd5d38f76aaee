"""``mmedge export``: checkpoint -> bundle (ONNX graphs per precision, parity, accuracy).

The bundle is assembled in a temporary folder next to the output and renamed into place,
so an interrupted export leaves nothing under the output name.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmedge.atomic import make_temp_dir
from mmedge.errors import ConfigError
from mmedge.export.components import Component, export_fp32, make_reduced
from mmedge.export.quantization import export_precisions
from mmedge.export.manifest_builder import build_manifest, bundle_files, validation_metrics
from mmedge.export.accuracy import assess_precisions
from mmedge.export.heads_graph import with_heads_graphs
from mmedge.export.backend_check import check_components, check_merged_heads
from mmedge.progress import log, track
from mmedge.runtime.precisions import PRECISIONS, REFERENCE, PrecisionKind, get_precision


@dataclass(frozen=True)
class ExportConfig:
    """Settings of one export.

    Attributes:
        precisions: Precisions to make (default: every one export can make,
            ``quantization.export_precisions``); fp32 is always built: the others derive from it.
        max_drop: Largest accepted ensemble accuracy drop vs PyTorch, in points.
        calib: A user calibration JSONL or folder; None = the default set for the dataset.
        calib_samples: Calibration samples used per component.
        eval_samples: Held-out samples evaluated per precision (None = the whole test split).
        atol: fp32 parity tolerance (max abs diff) against PyTorch.
        threads: ONNX Runtime threads for evaluation (None = all cores).
    """

    precisions: tuple[str, ...] = field(default_factory=export_precisions)
    max_drop: float = 1.0
    calib: Path | None = None
    calib_samples: int = 200
    eval_samples: int | None = None
    atol: float = 1e-4
    threads: int | None = None

    def __post_init__(self) -> None:
        _check_precisions(self.precisions)
        if self.max_drop < 0 or self.calib_samples < 1 or (self.eval_samples is not None and self.eval_samples < 1):
            raise ConfigError(f"need max_drop >= 0, calib_samples >= 1 and eval_samples >= 1 (or None); got "
                              f"{self.max_drop}, {self.calib_samples}, {self.eval_samples}")
        ordered = tuple(p for p in export_precisions() if p == REFERENCE or p in self.precisions)
        object.__setattr__(self, "precisions", ordered)


def _check_precisions(asked: tuple[str, ...]) -> None:
    """Every precision asked for is registered, has a way to be made, and has the graph it derives from.

    Raises:
        ConfigError: naming the precision and what to do.
    """
    valid = export_precisions()
    unknown = [p for p in asked if p not in PRECISIONS]
    if unknown:
        raise ConfigError(f"unknown precisions {unknown}; valid: {list(valid)}")
    unbuildable = [p for p in asked if p not in valid]
    if unbuildable:
        raise ConfigError(f"precisions {unbuildable} have no export policy (import the module that registers one); "
                          f"valid: {list(valid)}")
    for name in asked:
        source = get_precision(name).derives_from
        if source not in (None, REFERENCE) and source not in asked:
            raise ConfigError(f"{name} is converted from the {source} graph: add {source} to the precisions "
                              f"(--precision ...,{source},{name})")


def components_of(model) -> list[Component]:
    """Every encoder and every member head of the ensemble, in bundle order (an encoder's NNCF
    scheme is read from its exported graph: ``quantization.graph_traits``)."""
    comps = [Component(f"encoder.{m}", f"encoders/{m}", enc, "encoder") for m, enc in model.encoders.items()]
    comps += [Component(f"head.{n}", f"heads/{n}", head, "head", "head") for n, head in model.heads.items()]
    return comps


def export_checkpoint(checkpoint: Path, out: Path, *, config: ExportConfig = ExportConfig()) -> dict[str, Any]:
    """Exports a trained checkpoint to a bundle folder ``out``; returns the manifest.

    Raises:
        CheckpointError: a missing checkpoint, one of another format version, or one whose
            plug-ins are not loaded (the module to import is named).
        CalibrationError: calibration data that does not match the model's inputs.
        ParityError: an fp32 graph that does not reproduce PyTorch within ``config.atol``.
    """
    from mmedge.export.sources import ExportSources

    return export_sources(ExportSources.load(Path(checkpoint), config), out, config=config)


def export_sources(src, out: Path, *, config: ExportConfig) -> dict[str, Any]:
    """The one export core, for checkpoints and for users' modules (``user_model.export_model``).

    Args:
        src: An ``ExportSources``: the ensemble, its recipe, parity cases, calibration batches,
            and labelled rows for the accuracy report (``data`` None: no report).
        out: The bundle folder to write.
        config: The export settings.

    Returns:
        The manifest as written (hashes and sizes filled in).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = make_temp_dir(out, "work")  # named with this process id: a later write sweeps it if we are killed
    try:
        comps = components_of(src.model)
        for comp in track(comps, "exporting fp32 + parity"):
            export_fp32(comp, work, src.cases[1], src.cases, atol=config.atol)
        built = [p for p in config.precisions[1:] if get_precision(p).kind is PrecisionKind.BUILT]
        for precision in built:  # in registration order: a graph's source is built before it; mixed picks among them
            for comp in track(comps, f"building {precision}"):
                make_reduced(comp, precision, work, src.calib, src.cases)
        check_components(comps, work, src.cases, threads=config.threads)  # OpenVINO, when installed
        metrics, status = {"validation": validation_metrics(src.checkpoint)}, {p: "ok" for p in config.precisions}
        if src.data is not None:
            assess_precisions(comps, src, work, config, metrics, status)
        else:
            metrics["accuracy"] = "not measured: no labelled samples were given (eval_data)"
            for precision in config.precisions:
                if get_precision(precision).kind is PrecisionKind.SELECTED:
                    status[precision] = f"not built: {precision} checks its accuracy budget on labelled samples"
        manifest = build_manifest(src, comps, config, precisions=status, metrics=metrics)
        manifest = with_heads_graphs(manifest, work, src.cases)  # every head and the rule as one graph per precision
        manifest = check_merged_heads(manifest, work, src.cases, threads=config.threads)
        from mmedge.export.bundle_writer import write_bundle

        write_bundle(out, manifest, bundle_files(manifest, work, src.tokenizer_file))
        log(f"bundle written to {out}")
        return json.loads((out / "manifest.json").read_text())  # with the hashes and sizes filled in
    finally:
        shutil.rmtree(work, ignore_errors=True)
