"""The typed bundle manifest (docs/bundle.md, ``mmedge.runtime.manifest``) built from the exported components."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from mmedge import BUNDLE_FORMAT, __version__
from mmedge.runtime.manifest import EncoderInfo, EnsembleInfo, Manifest, MemberInfo, TensorInfo


def _versions(opset: int) -> dict[str, Any]:
    import nncf
    import onnx
    import onnxruntime
    import torch

    return {"mmedge": __version__, "torch": torch.__version__, "onnx": onnx.__version__, "opset": opset,
            "nncf": nncf.__version__, "onnxruntime": onnxruntime.__version__}


def _tensors(items: Any) -> tuple[TensorInfo, ...]:
    return tuple(TensorInfo(name=t["name"], dtype=t.get("dtype", "float32"), shape=tuple(t.get("shape", ())))
                 for t in items)


def build_manifest(src, comps, config, *, precisions: Mapping[str, str] | None = None,
                   metrics: Mapping[str, Any] | None = None) -> Manifest:
    """The manifest of the components as they are now (``write_bundle`` fills in hashes and sizes).

    Args:
        src: The ``ExportSources`` (recipe, model, labels, calibration, where it came from).
        comps: The components, with their graph entries.
        config: The ``ExportConfig`` (its precisions).
        precisions: precision -> status (default: every precision of ``config`` ``"ok"``).
        metrics: The accuracy report so far (default: the validation figures training measured).
    """
    from mmedge.export.pretrained import optional_modalities, similarity_record

    recipe, model = src.recipe, src.model
    encoders = {c.key.split(".", 1)[1]: c for c in comps if c.kind == "encoder"}
    heads = {c.key.split(".", 1)[1]: c for c in comps if c.kind == "head"}
    return Manifest(
        format=BUNDLE_FORMAT, name=recipe.name, task=recipe.task, labels=tuple(src.meta["labels"]),
        modalities=tuple(recipe.modalities), optional_modalities=optional_modalities(recipe),
        inputs={m: recipe.specs[m] for m in recipe.modalities}, similarity=similarity_record(model),
        encoders={m: EncoderInfo(modality=m, name=recipe.encoders[m], inputs=_tensors(c.info.inputs),
                                 outputs=_tensors(c.info.outputs), graphs=dict(c.graphs)) for m, c in encoders.items()},
        members=tuple(MemberInfo(name=mb.name, head=mb.head, modalities=tuple(mb.modalities),
                                 inputs=tuple(heads[mb.name].input_names), temperature=float(t), weight=float(w),
                                 graphs=dict(heads[mb.name].graphs))
                      for mb, t, w in zip(recipe.members, model.temperatures, model.weights)),
        ensemble=EnsembleInfo(method=recipe.ensemble.value, selection=src.meta.get("ensemble_selection"),
                              stacking=model.stacking.to_dict() if getattr(model, "stacking", None) else None),
        precisions=dict(precisions) if precisions is not None else {p: "ok" for p in config.precisions},
        files={},  # filled in by write_bundle
        metrics=dict(metrics) if metrics is not None else {"validation": validation_metrics(src.checkpoint)},
        calibration={"source": src.calib_source, "samples": len(src.calib)},
        dataset=dict(src.meta.get("dataset", {})), **_source(src),
        versions=_versions(max(c.info.opset for c in comps)),
    )


def _source(src) -> dict[str, Any]:
    """Where the model came from: a checkpoint folder, or users' modules (their classes)."""
    if src.checkpoint is not None:
        return {"source_checkpoint": str(Path(src.checkpoint).resolve())}
    return {"source_model": dict(src.meta.get("source_model", {}))}


def validation_metrics(checkpoint: Path | None) -> dict[str, Any]:
    """Per-member accuracy on the whole validation split, as training measured it (the bench
    picks the single member it compares with the ensemble from these); empty for users' modules."""
    from mmedge.checkpoint import METRICS_FILE

    path = Path(checkpoint) / METRICS_FILE if checkpoint is not None else None
    metrics = json.loads(path.read_text(encoding="utf-8")) if path is not None and path.is_file() else {}
    return {"split": "val", "samples": metrics.get("samples", {}).get("val"),
            "members": {name: m["val_accuracy"] for name, m in metrics.get("members", {}).items()
                        if "val_accuracy" in m}}


def bundle_files(manifest: Manifest, work: Path, tokenizer_file: Path | None) -> dict[str, Path]:
    """Bundle-relative path -> file on disk, for every graph the manifest references."""
    from mmedge.runtime.specs import spec_files

    files = {e.file: work / e.file for _, graphs in manifest.graph_owners() for e in graphs.values() if e.file}
    for spec in manifest.inputs.values():  # the files a spec names: the tokenizer
        for rel in spec_files(type(spec), spec).values():
            if tokenizer_file is not None:
                files[rel] = tokenizer_file
    return files
