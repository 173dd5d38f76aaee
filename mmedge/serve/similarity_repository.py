"""The similarity models of an ``mmedge triton`` repository, for a bundle with a ``similarity`` record (a CLIP,
SigLIP or CLAP folder exported as itself): its query modality scored against free texts sent as ``queries``.

| model                       | backend  | does                                                                  |
|-----------------------------|----------|-----------------------------------------------------------------------|
| `NAME.similarity.text`      | ensemble | `text` -> `NAME.preprocess.text` -> `NAME.encoder.text` -> `text_embed` |
| `NAME.similarity.score`     | python   | `<modality>_embed` and `queries` -> the similarity outputs (`steps.Similarity`); encodes the queries with `NAME.similarity.text` (business-logic scripting), caching them |
| `NAME.similarity`           | ensemble | the scored modality's wire inputs and `queries` -> `scores`, `query_probabilities`, `index`, `label` |

The text and scored modality's preprocessing and encoder models are those of the repository.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmedge.serve.model_repository import RepositoryConfig, RepositoryModel, _plain, _python_model, _step, _write
from mmedge.serve.pbtxt import tensor
from mmedge.serve.protocol import input_specs, modality_inputs, queries_spec, similarity_output_specs

__all__ = ["similarity_modalities_served", "similarity_models"]


def similarity_modalities_served(bundle: Any) -> tuple[str, ...]:
    """The modalities whose models the similarity ensembles need: text and the scored one (none without a record)."""
    info = bundle.manifest.similarity
    if info is None:
        return ()
    return ("text", _scored(info))


def _scored(info: Any) -> str:
    return next(m for m in info.modalities if m != "text")


def _output(io: dict[str, tuple[list, list]], component: str, name: str) -> dict:
    return next(t for t in io[component][1] if t["name"] == name)


def _encode_steps(prefix: str, modality: str, io: dict[str, tuple[list, list]], embed: str) -> list[dict]:
    """The preprocessing and encoder steps of ``modality``, up to its ``embed`` output."""
    feed = {t["name"]: f"{modality}.{t['name']}" for t in io[f"encoder.{modality}"][0]}
    return [_step(f"{prefix}.preprocess.{modality}", {n: n for n in modality_inputs(modality)}, feed),
            _step(f"{prefix}.encoder.{modality}", dict(feed), {embed: embed})]


def similarity_models(out: Path, bundle: Any, io: dict[str, tuple[list, list]], config: RepositoryConfig
                      ) -> list[RepositoryModel]:
    """Writes the similarity models of ``bundle`` (none without a similarity record); ``io``: component ->
    its graph's Triton inputs and outputs."""
    info = bundle.manifest.similarity
    if info is None:
        return []
    prefix, modality = config.model_name, _scored(info)
    text_embed, query_embed = info.embed("text"), info.embed(modality)
    text_out = _output(io, "encoder.text", text_embed)
    _write(out / f"{prefix}.similarity.text", {
        "name": f"{prefix}.similarity.text", "platform": "ensemble", "max_batch_size": config.max_batch,
        "input": [tensor(t.name, t.triton_dtype, t.dims) for t in input_specs(["text"])], "output": [text_out],
        "ensemble_scheduling": {"step": _encode_steps(prefix, "text", io, text_embed)}})
    queries, outputs = queries_spec(), [tensor(t.name, t.triton_dtype, t.dims) for t in similarity_output_specs()]
    score_inputs = [_output(io, f"encoder.{modality}", query_embed), tensor(queries.name, queries.triton_dtype,
                                                                             queries.dims)]
    params = {"step": "similarity", "similarity": json.dumps(_plain(_record(info))), "modality": modality,
              "text_model": f"{prefix}.similarity.text", "text_embed": text_embed, "max_batch": str(config.max_batch)}
    _python_model(out, f"{prefix}.similarity.score", config, params, score_inputs, outputs)
    steps = _encode_steps(prefix, modality, io, query_embed)
    steps.append(_step(f"{prefix}.similarity.score", {query_embed: query_embed, queries.name: queries.name},
                       {t["name"]: t["name"] for t in outputs}))
    inputs = [tensor(t.name, t.triton_dtype, t.dims) for t in input_specs([modality])]
    _write(out / f"{prefix}.similarity", {
        "name": f"{prefix}.similarity", "platform": "ensemble", "max_batch_size": config.max_batch,
        "input": inputs + [tensor(queries.name, queries.triton_dtype, queries.dims)], "output": outputs,
        "ensemble_scheduling": {"step": steps}})
    return [RepositoryModel(f"{prefix}.similarity.text", "ensemble", "queries -> text_embed"),
            RepositoryModel(f"{prefix}.similarity.score", "python", f"mmedge.serve.steps.Similarity({modality})"),
            RepositoryModel(f"{prefix}.similarity", "ensemble", f"{modality} and queries -> similarity scores")]


def _record(info: Any) -> dict:
    """The similarity record as the manifest holds it (``SimilarityInfo`` fields)."""
    from mmedge.runtime.manifest import to_json

    return to_json(info)
