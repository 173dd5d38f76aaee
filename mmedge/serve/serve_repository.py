"""The model repository ``mmedge serve`` runs: one Python-backend model that serves a whole bundle.

The model runs ``steps.answer_all`` over ``handler.BundleHandler`` (one ``Session`` per model
instance, in that instance's Python-backend process), so each request of a dynamic batch is
answered on its own: a bad request gets its own error, INVALID_ARG (HTTP 400 / gRPC
INVALID_ARGUMENT) with the runtime's message, and the valid requests of its batch are answered. A bundle
with a similarity record also takes ``queries`` (``protocol``): those requests get the similarity outputs.
The queue is bounded (``ServeConfig.max_queue``): overflow is refused at once with UNAVAILABLE.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmedge.serve.pbtxt import Enum, string_parameters, tensor, to_pbtxt
from mmedge.serve.protocol import input_specs, output_specs, queries_spec, similarity_output_specs
from mmedge.serve.serve_config import ServeConfig, dynamic_batching

__all__ = ["write_serve_repository", "serve_model_config"]

_MODEL_PY = Path(__file__).resolve().parent / "triton_models" / "model.py"


def serve_model_config(bundle: Any, config: ServeConfig, threads: int) -> dict[str, Any]:
    """The ``config.pbtxt`` message of the served model (a dict for ``pbtxt.to_pbtxt``).

    Args:
        bundle: The opened ``Bundle`` (its source path, labels and members).
        config: The serving settings.
        threads: CPU threads per graph of each instance's ``Session``.
    """
    inputs = [{**tensor(t.name, t.triton_dtype, t.dims), "optional": True}
              for t in input_specs()]  # every registered modality's (plug-ins included)
    outputs = [tensor(t.name, t.triton_dtype, t.dims) for t in output_specs(len(bundle.labels), len(bundle.members))]
    if bundle.manifest.similarity is not None:  # a request with `queries` is scored against them (Session.similarity)
        queries = queries_spec()
        inputs.append({**tensor(queries.name, queries.triton_dtype, queries.dims), "optional": True})
        outputs += [tensor(t.name, t.triton_dtype, t.dims) for t in similarity_output_specs()
                    if t.name not in {o["name"] for o in outputs}]
    params = {"step": "bundle", "bundle": str(Path(bundle.source).resolve()), "precision": config.precision,
              "backend": config.backend, "threads": str(threads), "limits": json.dumps(asdict(config.limits))}
    return {"name": config.model_name, "backend": "python", "max_batch_size": config.max_batch,
            "input": inputs, "output": outputs,
            "dynamic_batching": dynamic_batching(config) if config.batching else None,
            "instance_group": [{"count": config.instances, "kind": Enum("KIND_CPU")}],
            "parameters": string_parameters(params)}


def write_serve_repository(bundle: Any, out: Path, config: ServeConfig, threads: int) -> Path:
    """Writes the served model under ``out`` (``out/<model_name>/config.pbtxt`` and ``1/model.py``).

    Returns:
        The model's folder.
    """
    folder = Path(out) / config.model_name
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(to_pbtxt(serve_model_config(bundle, config, threads)), encoding="utf-8")
    shutil.copyfile(_MODEL_PY, folder / "1" / "model.py")
    return folder
