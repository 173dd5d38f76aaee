"""Open-vocabulary matching: a pretrained dual encoder's own scores between inputs and free texts.

A bundle of a CLIP, SigLIP or CLAP folder records how the model scores two embeddings
(``similarity`` in the manifest, ``mmedge.runtime.manifest.SimilarityInfo``: the modalities, the
logit scale per query modality, the bias and the activation). ``Session.similarity(image=..., text=[...])`` runs the image (or audio) tower and
the text tower (texts through the text cache) and returns ``scale * cos + bias`` (N_inputs, N_texts),
exactly the model's ``logits_per_image``. numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from mmedge.errors import InputError
from mmedge.runtime.manifest import SimilarityInfo

__all__ = ["SimilarityInfo", "ACTIVATIONS", "Matches", "similarity_scores", "bundle_similarity",
           "similarity_modalities", "session_similarity", "query_step", "matches_rows", "activate"]

ACTIVATIONS = ("softmax", "sigmoid")  # over the texts (CLIP, CLAP) / per pair (SigLIP)


def _normalized(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # as F.normalize (eps 1e-12)


def similarity_scores(query: np.ndarray, texts: np.ndarray, info: SimilarityInfo, modality: str, *,
                      probabilities: bool = False) -> np.ndarray:
    """``scale * cos(query_i, text_j) + bias`` (N, T), or its probabilities (softmax over the texts /
    sigmoid per pair, the model's own activation).

    Args:
        query: (N, E) embeddings of the query modality.
        texts: (T, E) text embeddings.
        info: The bundle's similarity record.
        modality: The query modality (its scale).
        probabilities: Apply the model's activation.
    """
    if modality not in info.scale:
        raise InputError(f"this bundle scores {[m for m in info.modalities if m != 'text']} against text, not {modality}")
    logits = (info.scale[modality] * _normalized(query) @ _normalized(texts).T + info.bias).astype(np.float32)  # (N, T)
    return activate(logits, info.activation) if probabilities else logits


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """The model's activation of similarity logits: softmax over the last axis (the texts), or sigmoid per value."""
    if activation == "sigmoid":
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


def bundle_similarity(bundle: Any) -> SimilarityInfo | None:
    """The similarity record of a ``Bundle`` (None: the bundle's model has none)."""
    return bundle.manifest.similarity


def similarity_modalities(bundle: Any) -> tuple[str, ...]:
    """The modalities whose encoders ``Session.similarity`` runs (none without a similarity record)."""
    info = bundle_similarity(bundle)
    return info.modalities if info is not None else ()


@dataclass(frozen=True)
class Matches:
    """One frame's scores against the stream's queries (``Session.stream(..., queries=[...])``).

    Attributes:
        queries: The query texts.
        scores: (Q,) ``scale * cos + bias`` of the frame against each query.
        probabilities: (Q,) the model's activation of them (softmax over the queries / sigmoid each).
    """

    queries: tuple[str, ...]
    scores: np.ndarray
    probabilities: np.ndarray

    @property
    def best(self) -> str:
        """The query that scores highest."""
        return self.queries[int(np.argmax(self.scores))]


def _required(bundle: Any) -> SimilarityInfo:
    info = bundle_similarity(bundle)
    if info is None:
        raise InputError("this bundle's model has no similarity (it is not a pretrained dual encoder with both "
                         "towers); export a CLIP, SigLIP or CLAP folder with `mmedge export hf:PATH --labels ...`")
    return info


def session_similarity(session: Any, *, text: Any, inputs: Mapping[str, Any], options: Any,
                       probabilities: bool = False) -> np.ndarray:
    """``Session.similarity``: the one input modality given in ``inputs`` against ``text``.

    Raises:
        InputError: a bundle without a similarity record, not exactly one input modality, bad inputs.
    """
    from mmedge.runtime.modalities import get_modality

    info = _required(session.bundle)
    given = {m: v for m, v in inputs.items() if v is not None}
    queries = [m for m in info.modalities if m != "text"]
    if len(given) != 1 or next(iter(given)) not in queries:
        raise InputError(f"pass exactly one of {[q + '=' for q in queries]} (the inputs to score) and text=[...]; "
                         f"got {sorted(given)}")
    (modality, value), = given.items()
    items = get_modality(modality).split(value, options, session.limits)
    query = session._encode(modality, items, options, {})[info.embed(modality)]  # (N, E)
    texts = session.encode_texts(text)[info.embed("text")]  # (T, E), through the text cache
    return similarity_scores(query, texts, info, modality, probabilities=probabilities)


def matches_rows(session: Any, frames: list, queries: tuple[str, ...]) -> list[Matches]:
    """One batched similarity of BGR ``frames`` against ``queries``: each frame's ``Matches``."""
    from mmedge.runtime.modalities import InputOptions

    info = _required(session.bundle)
    scores = session_similarity(session, text=list(queries), inputs={"image": frames},
                                options=InputOptions(image_color_order="BGR"))  # (N, Q)
    probs = activate(scores, info.activation)
    return [Matches(queries, scores[i], probs[i]) for i in range(len(frames))]


def query_step(session: Any, queries: Any, text: Any) -> Callable[[np.ndarray], Matches]:
    """``frame_bgr -> Matches`` for ``Session.stream(..., queries=[...])``: the queries are encoded once
    (the text cache keeps them) and each frame is scored against them.

    Raises:
        InputError: ``text`` given as well, an empty or non-string query list, a bundle without similarity.
    """
    from mmedge.runtime.modalities import InputOptions

    if text is not None:
        raise InputError("pass queries= (free texts scored against each frame) or text= (a text input of the "
                         "bundle's members), not both")
    if isinstance(queries, str) or not queries or not all(isinstance(q, str) and q.strip() for q in queries):
        raise InputError(f"queries must be a non-empty list of non-empty strings, got {queries!r}")
    queries, info = tuple(queries), _required(session.bundle)
    if "image" not in info.modalities:
        raise InputError(f"this bundle scores {[m for m in info.modalities if m != 'text']} against text, not frames")
    session.encode_texts(list(queries))  # once: the text cache keeps them
    bgr = InputOptions(image_color_order="BGR")

    def step(frame: np.ndarray) -> Matches:
        scores = session_similarity(session, text=list(queries), inputs={"image": frame}, options=bgr)[0]  # (Q,)
        return Matches(queries, scores, activate(scores[None], info.activation)[0])

    return step
