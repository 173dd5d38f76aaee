"""The bundle manifest (docs/bundle.md) built from the exported components."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmedge import BUNDLE_FORMAT, __version__
from mmedge.export.bundle_writer import graph_entries
from mmedge.runtime.specs import spec_to_dict


def _versions(opset: int) -> dict[str, Any]:
    import nncf
    import onnx
    import onnxruntime
    import torch

    return {"mmedge": __version__, "torch": torch.__version__, "onnx": onnx.__version__, "opset": opset,
            "nncf": nncf.__version__, "onnxruntime": onnxruntime.__version__}


def _inputs(recipe) -> dict[str, Any]:
    return {m: spec_to_dict(recipe.specs[m]) for m in recipe.modalities}


def build_manifest(src, comps, config) -> dict[str, Any]:
    """The manifest; each graph table is the component's own dict (later fallbacks show up)."""
    recipe, model = src.recipe, src.model
    encoders = {c.key.split(".", 1)[1]: c for c in comps if c.kind == "encoder"}
    heads = {c.key.split(".", 1)[1]: c for c in comps if c.kind == "head"}
    return {
        "format": BUNDLE_FORMAT, "name": recipe.name, "task": recipe.task, "labels": list(src.meta["labels"]),
        "modalities": list(recipe.modalities), "optional_modalities": [], "inputs": _inputs(recipe),
        "encoders": {m: {"name": recipe.encoders[m], "inputs": c.info.inputs, "outputs": c.info.outputs,
                         "graphs": c.graphs} for m, c in encoders.items()},
        "members": [{"name": mb.name, "head": mb.head, "modalities": list(mb.modalities),
                     "inputs": list(heads[mb.name].input_names), "output": "logits",
                     "temperature": t, "weight": w, "graphs": heads[mb.name].graphs}
                    for mb, t, w in zip(recipe.members, model.temperatures, model.weights)],
        "ensemble": {"method": recipe.ensemble.value},  # weights and temperatures live on each member
        "precisions": {p: "ok" for p in config.precisions},
        "metrics": {"validation": _validation_metrics(src.checkpoint)},
        "calibration": {"source": src.calib_source, "samples": len(src.calib)},
        "dataset": dict(src.meta.get("dataset", {})),
        **_source(src),
        "versions": _versions(max(c.info.opset for c in comps)),
    }


def _source(src) -> dict[str, Any]:
    """Where the model came from: a checkpoint folder, or users' modules (their classes)."""
    if src.checkpoint is not None:
        return {"source_checkpoint": str(Path(src.checkpoint).resolve())}
    return {"source_model": dict(src.meta.get("source_model", {}))}


def _validation_metrics(checkpoint: Path | None) -> dict[str, Any]:
    """Per-member accuracy on the whole validation split, as training measured it (the bench
    picks the single member it compares with the ensemble from these); empty for users' modules."""
    from mmedge.checkpoint import METRICS_FILE

    path = Path(checkpoint) / METRICS_FILE if checkpoint is not None else None
    metrics = json.loads(path.read_text(encoding="utf-8")) if path is not None and path.is_file() else {}
    return {"split": "val", "samples": metrics.get("samples", {}).get("val"),
            "members": {name: m["val_accuracy"] for name, m in metrics.get("members", {}).items()
                        if "val_accuracy" in m}}


def bundle_files(manifest: dict[str, Any], work: Path, tokenizer_file: Path | None) -> dict[str, Path]:
    """Bundle-relative path -> file on disk, for every graph the manifest references."""
    from mmedge.runtime.modalities import get_modality
    from mmedge.runtime.specs import spec_files

    files = {e["file"]: work / e["file"] for e in graph_entries(manifest) if "file" in e}
    for m, raw in manifest["inputs"].items():  # the files a spec names: the tokenizer
        for rel in spec_files(get_modality(m).spec_class, raw).values():
            if tokenizer_file is not None:
                files[rel] = tokenizer_file
    return files
