"""Runs a model of an ``mmedge triton`` repository in this process, from its ``config.pbtxt`` files: an ensemble's
steps in order, each Python model through ``steps.create_step`` (with ``infer`` running the repository's other
models, as Triton's business-logic scripting does). Needs tritonclient (the ModelConfig protobuf): serve env only."""
from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from mmedge.serve.steps import create_step


def configs(repo: Path) -> dict:
    """Model name -> its parsed ``config.pbtxt``."""
    return {p.parent.name: text_format.Parse(p.read_text(), model_config_pb2.ModelConfig())
            for p in sorted(Path(repo).glob("*/config.pbtxt"))}


def run_model(repo: Path, name: str, data: dict, models: dict | None = None, steps: dict | None = None) -> dict:
    """Model ``name``'s outputs for the request ``data`` (input name -> batched array)."""
    models = configs(repo) if models is None else models
    steps = {} if steps is None else steps  # model name -> its step, built once

    def infer(model, inputs, outputs):
        got = run_model(repo, model, dict(inputs), models, steps)
        return {n: got[n] for n in outputs}

    config = models[name]
    if config.platform != "ensemble":
        if name not in steps:
            params = {k: v.string_value for k, v in config.parameters.items()}
            steps[name] = create_step(params, Path(repo) / name / "1", infer=infer)
        return steps[name](data)
    tensors = dict(data)
    for step in config.ensemble_scheduling.step:
        out = run_model(repo, step.model_name, {k: tensors[v] for k, v in step.input_map.items()}, models, steps)
        tensors.update({outer: out[inner] for inner, outer in step.output_map.items()})
    return {o.name: tensors[o.name] for o in config.output}
