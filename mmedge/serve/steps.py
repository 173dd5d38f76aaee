"""The steps the Python-backend models of a generated repository run: numpy in, numpy out.

``triton_models/model.py`` is the Triton glue (``pb_utils`` tensors <-> numpy); it builds one
of these from the model's ``parameters`` (``create_step``). They reuse the runtime's own
preprocessing and ensemble rule, so a repository predicts what ``Session.predict`` predicts.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mmedge.errors import BundleError, ConfigError
from mmedge.serve.protocol import QUERIES, WireLimits, decode_queries, decode_request, encode_outputs, \
    encode_similarity

__all__ = ["Preprocess", "Combine", "OnnxGraph", "Similarity", "Infer", "create_step", "answer_all", "STEPS"]

Infer = Callable[[str, Mapping[str, np.ndarray], Sequence[str]], dict]  # (model, inputs, outputs) -> outputs


class Preprocess:
    """One modality's preprocessing: its contract inputs (``image``...) -> its encoder's inputs.

    Args:
        modality: A registered modality (``mmedge.runtime.modalities``): ``image``, ``text``, ``audio``...
        spec: The bundle's ``inputs.<modality>`` (a dict of its spec class).
        outputs: Encoder input name -> preprocessing array name (``pixel_values``, ``input_ids``,
            ``attention_mask``, ``mel`` / ``waveform``: the record's ``encoder_inputs(spec)``).
        folder: The model version folder (holds the files the spec names: ``tokenizer.json``).
    """

    def __init__(self, modality: str, spec: Mapping[str, Any], outputs: Mapping[str, str], folder: Path) -> None:
        from mmedge.runtime.modalities import MODALITIES, PreprocessContext
        from mmedge.runtime.specs import spec_from_dict

        if modality not in MODALITIES:
            raise ConfigError(f"unknown modality {modality!r}; valid: {list(MODALITIES)}")
        self.modality, self.outputs, self.record = modality, dict(outputs), MODALITIES[modality]
        self.spec = spec_from_dict(self.record.spec_class, spec)
        self._preprocess = self.record.preprocessor(self.spec, PreprocessContext(folder=Path(folder)))

    def __call__(self, data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = decode_request(data, WireLimits())
        arrays = self._preprocess(rows.items[self.modality])
        if len(self.outputs) == 1 and len(arrays) == 1:  # a repository written before the names came from the spec
            return {next(iter(self.outputs)): next(iter(arrays.values()))}
        return {name: arrays[source] for name, source in self.outputs.items()}


class Combine:
    """The ensemble rule over members' logits -> the contract outputs (``protocol.encode_outputs``), through
    ``mmedge.runtime.ensemble.ensemble_prediction`` as ``Session`` does.

    Args:
        method: ``weighted_mean`` | ``soft_vote`` | ``majority_vote`` | ``stacking``.
        labels: The class names.
        members: ``[{"name", "weight", "temperature"}]`` of the members this ensemble runs.
        all_members: Every member of the bundle, in order.
        backend: What ran the graphs (reported in ``meta``).
        precision: The bundle precision served.
        note: Why members were left out (a variant without an optional modality).
        stacking: The ``stacking`` rule's coefficients as the manifest holds them (``{"coef", "intercept"}``);
            a variant that runs only some members combines them by their weights, as ``Session`` does.
        merged: The inputs are the merged heads graph's outputs (``heads.probabilities`` and each member's
            ``heads.probabilities.<member>``: the rule already applied, as ``Session`` runs it), not logits.
    """

    def __init__(self, method: str, labels: list[str], members: list[dict], all_members: list[str],
                 backend: str, precision: str, note: str = "", stacking: Mapping[str, Any] | None = None,
                 merged: bool = False) -> None:
        from mmedge.runtime.ensemble import MemberRule, Stacking

        self.method, self.labels = method, list(labels)
        self.stacking = Stacking.from_dict(stacking) if stacking is not None else None
        self.members = [MemberRule(m["name"], float(m["weight"]), float(m["temperature"])) for m in members]
        self.all_members, self.backend, self.precision, self.note = list(all_members), backend, precision, note
        self.merged = merged

    def __call__(self, data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from mmedge.runtime.ensemble import ensemble_prediction

        if self.merged:
            return self._from_merged(data)

        logits = {m.name: np.asarray(data[f"logits.{m.name}"], dtype=np.float32) for m in self.members}  # (b, C)
        ran = {m.name for m in self.members}
        pred = ensemble_prediction(logits, self.members, method=self.method, labels=self.labels, backend=self.backend,
                                   precision=self.precision, skipped=[n for n in self.all_members if n not in ran],
                                   note=self.note, stacking=self.stacking)
        return encode_outputs(pred, self.all_members, slice(0, len(pred.indices)))

    def _from_merged(self, data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from mmedge.runtime.merged_heads import prediction_from_outputs

        outputs = {name[len(MERGED_PREFIX):]: v for name, v in data.items() if name.startswith(MERGED_PREFIX)}
        pred = prediction_from_outputs(outputs, [m.name for m in self.members], labels=self.labels,
                                       backend=self.backend, precision=self.precision, note=self.note)
        return encode_outputs(pred, self.all_members, slice(0, len(pred.indices)))


MERGED_PREFIX = "heads."  # the combine step's inputs carrying the merged heads graph's outputs


def merged_input(output: str) -> str:
    """The combine step's input carrying the merged heads graph's ``output``."""
    return MERGED_PREFIX + output


class OnnxGraph:
    """A bundle graph run by onnxruntime inside the Python backend (Triton builds without its ORT backend).

    Args:
        graph: The ONNX file.
        threads: Intra-op threads (None: all cores).
        disabled_optimizers: ONNX Runtime optimizers that stay off for this graph (its manifest entry's
            ``ort_disabled_optimizers``, as ``Session`` runs it: ``int8-fp16-trt`` on ONNX Runtime CPU).
    """

    def __init__(self, graph: Path, threads: int | None = None, disabled_optimizers: tuple[str, ...] = ()) -> None:
        from mmedge.runtime.backends.ort import create_session

        if not Path(graph).is_file():
            raise BundleError(f"graph {graph} is missing; regenerate the repository with `mmedge triton`")
        self.disabled_optimizers = tuple(disabled_optimizers)
        self._session = create_session(graph, threads=threads, disabled_optimizers=self.disabled_optimizers)
        self._outputs = [o.name for o in self._session.get_outputs()]

    def __call__(self, data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._session.run(None, dict(data))))


class Similarity:
    """A similarity request's scores: its query modality's embeddings against its ``queries``, as
    ``Session.similarity`` (``mmedge.runtime.similarity.similarity_scores`` and the model's activation).

    Args:
        info: The bundle's ``similarity`` record, as the manifest holds it.
        modality: The modality scored (``image``; ``audio`` for CLAP).
        encode_texts: Texts -> their ``text_embed`` (T, E): the repository's text ensemble, called through
            Triton's business-logic scripting (``triton_models/model.py``).
        cache_size: Query texts whose embeddings are kept (least recently used dropped), as a ``Session``'s text cache.
    """

    def __init__(self, info: Mapping[str, Any], modality: str, encode_texts: Callable[[list[str]], np.ndarray],
                 cache_size: int = 256) -> None:
        from mmedge.runtime.manifest import SimilarityInfo
        from mmedge.runtime.manifest_schema import read_dataclass
        from mmedge.runtime.text_cache import TextCache

        self.info, self.modality = read_dataclass(SimilarityInfo, dict(info), "similarity"), modality
        self._encode, self._cache = encode_texts, TextCache(cache_size)

    def __call__(self, data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from mmedge.runtime.similarity import activate, similarity_scores

        queries = decode_queries({QUERIES: data[QUERIES]}, WireLimits())
        embeds = np.asarray(data[self.info.embed(self.modality)], dtype=np.float32)  # (b, E)
        key = self.info.embed("text")
        texts = self._cache.lookup(list(queries), lambda misses: {key: self._encode(misses)})[key]  # (Q, E)
        scores = similarity_scores(embeds, texts, self.info, self.modality)  # (b, Q)
        return encode_similarity(scores, activate(scores, self.info.activation), queries)


def _bundle(params: Mapping[str, str], folder: Path, infer: Infer | None = None) -> Any:
    """``mmedge serve``'s one model: a whole bundle through a ``Session`` (``handler.BundleHandler``)."""
    from mmedge.runtime import Session
    from mmedge.serve.handler import BundleHandler

    limits = json.loads(params.get("limits") or "{}")
    if "audio_rates" in limits:
        limits["audio_rates"] = tuple(limits["audio_rates"])
    threads = int(params["threads"]) if params.get("threads") else None
    session = Session(params["bundle"], precision=params.get("precision", "fp32"),
                      backend=params.get("backend", "auto"), threads=threads)
    return BundleHandler(session, limits=WireLimits(**limits), owns_session=True)


def _preprocess(params: Mapping[str, str], folder: Path, infer: Infer | None = None) -> Preprocess:
    return Preprocess(params["modality"], json.loads(params["spec"]), json.loads(params["outputs"]), folder)


def _combine(params: Mapping[str, str], folder: Path, infer: Infer | None = None) -> Combine:
    return Combine(params["method"], json.loads(params["labels"]), json.loads(params["members"]),
                   json.loads(params["all_members"]), params["backend"], params["precision"], params.get("note", ""),
                   json.loads(params.get("stacking") or "null"), merged=params.get("merged") == "1")


def _onnx_graph(params: Mapping[str, str], folder: Path, infer: Infer | None = None) -> OnnxGraph:
    return OnnxGraph(Path(folder) / "model.onnx", threads=int(params["threads"]) if params.get("threads") else None,
                     disabled_optimizers=tuple(json.loads(params.get("disabled_optimizers") or "[]")))


def _similarity(params: Mapping[str, str], folder: Path, infer: Infer | None = None) -> Similarity:
    if infer is None:
        raise ConfigError("the similarity step calls the repository's text ensemble: it runs inside Triton "
                          "(create_step(..., infer=...))")
    text_model, chunk = params["text_model"], int(params["max_batch"])

    def encode_texts(texts: list[str]) -> np.ndarray:  # the text ensemble, at most max_batch texts a call
        rows = np.array([[t.encode("utf-8")] for t in texts], dtype=object)
        return np.concatenate([infer(text_model, {"text": rows[i:i + chunk]}, [params["text_embed"]])
                               [params["text_embed"]] for i in range(0, len(rows), chunk)])

    return Similarity(json.loads(params["similarity"]), params["modality"], encode_texts)


STEPS: Mapping[str, Callable[[Mapping[str, str], Path, Infer | None], Any]] = {
    "preprocess": _preprocess, "combine": _combine, "onnx_graph": _onnx_graph, "bundle": _bundle,
    "similarity": _similarity}


def create_step(params: Mapping[str, str], folder: Path, infer: Infer | None = None
                ) -> Callable[[Mapping[str, np.ndarray]], dict]:
    """The step named by ``params["step"]``, built from the model's string parameters.

    Args:
        params: The model config's ``parameters`` (string values).
        folder: The model version folder (``<model>/1``).
        infer: Runs another model of the server: ``(model, inputs, output names) -> outputs`` (Triton's
            business-logic scripting in ``triton_models/model.py``); the similarity step needs it.
    """
    step = params.get("step")
    if step not in STEPS:
        raise ConfigError(f"model parameter step={step!r} is not one of {sorted(STEPS)}; regenerate the "
                          "repository with `mmedge triton`")
    return STEPS[step](params, Path(folder), infer)


def answer_all(step: Any, requests: list[Mapping[str, np.ndarray]]) -> list[Any]:
    """Each request's outputs, or the exception it alone caused (a step's ``answer`` batches them; the others
    run each request on its own)."""
    if hasattr(step, "answer"):
        return step.answer(requests)
    answers: list[Any] = []
    for data in requests:
        try:
            answers.append(step(data))
        except Exception as exc:  # noqa: BLE001 - the request's own error; the others still run
            answers.append(exc)
    return answers
