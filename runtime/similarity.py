"""Open-vocabulary matching: a pretrained dual encoder's own scores between inputs and free texts.

A bundle of a CLIP, SigLIP or CLAP folder records how the model scores two embeddings
(``similarity`` in the manifest: the two modalities, the embedding outputs, the logit scale and bias
and the activation). ``Session.similarity(image=..., text=[...])`` runs the image (or audio) tower and
the text tower (texts through the text cache) and returns ``scale * cos + bias`` (N_inputs, N_texts),
exactly the model's ``logits_per_image``. numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from mmedge.errors import BundleError, InputError

__all__ = ["SimilarityInfo", "ACTIVATIONS", "Matches", "similarity_scores", "similarity_info", "bundle_similarity",
           "similarity_modalities", "session_similarity", "query_step", "activate"]

ACTIVATIONS = ("softmax", "sigmoid")  # over the texts (CLIP, CLAP) / per pair (SigLIP)


@dataclass(frozen=True, kw_only=True)
class SimilarityInfo:
    """How the bundle's model scores its query modality against text.

    Attributes:
        modalities: ``(query, "text")``: e.g. ``("image", "text")``; the query may be any tower's.
        scale: ``exp(logit_scale)`` per query modality (CLAP has one for audio against text).
        bias: The logit bias (SigLIP), else 0.
        activation: ``softmax`` over the texts or ``sigmoid`` per pair.
        family: ``clip``, ``siglip``, ``clap`` (reported).
    """

    modalities: tuple[str, ...]
    scale: Mapping[str, float]
    bias: float = 0.0
    activation: str = "softmax"
    family: str = ""

    def embed(self, modality: str) -> str:
        """The encoder output compared for ``modality``: ``{modality}_embed``."""
        return f"{modality}_embed"

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``similarity`` object."""
        return {"modalities": list(self.modalities), "scale": dict(self.scale), "bias": self.bias,
                "activation": self.activation, "family": self.family}


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise BundleError(f"manifest similarity.{where} must be a finite number, got {value!r}; re-export the bundle")
    return float(value)


def similarity_info(raw: Any, modalities: tuple[str, ...]) -> SimilarityInfo | None:
    """The manifest's ``similarity`` object as a ``SimilarityInfo`` (None when absent).

    Raises:
        BundleError: a malformed object (what is wrong, and to re-export).
    """
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("modalities"), (list, tuple)):
        raise BundleError("manifest similarity must be an object with modalities, scale, bias and activation; "
                          "re-export the bundle")
    mods = tuple(str(m) for m in raw["modalities"])
    scale = raw.get("scale")
    if "text" not in mods or len(mods) < 2 or not set(mods) <= set(modalities) or not isinstance(scale, Mapping):
        raise BundleError(f"manifest similarity.modalities {list(mods)} must be text and the bundle's other "
                          f"modalities {list(modalities)}, with a scale per modality; re-export the bundle")
    activation = raw.get("activation", "softmax")
    if activation not in ACTIVATIONS:
        raise BundleError(f"manifest similarity.activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    return SimilarityInfo(modalities=mods, scale={str(k): _number(v, f"scale.{k}") for k, v in scale.items()},
                          bias=_number(raw.get("bias", 0.0), "bias"), activation=activation,
                          family=str(raw.get("family", "")))


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
    manifest = bundle.manifest
    typed = getattr(manifest, "similarity", None)
    if isinstance(typed, SimilarityInfo):
        return typed
    raw = manifest.get("similarity") if isinstance(manifest, Mapping) else getattr(manifest, "extra", {}).get("similarity")
    return similarity_info(raw, tuple(bundle.modalities))


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
