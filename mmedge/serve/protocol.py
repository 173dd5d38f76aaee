"""The wire contract of an mmedge model on Triton, shared by the server, the client and the repository.

numpy only: no pytriton, no tritonclient, never torch. Every served mmedge model (``mmedge serve``,
and the ensembles ``mmedge triton`` writes) takes and returns these tensors, per row (Triton
prepends the batch axis). The inputs are each modality record's ``wire`` tensors
(``mmedge.runtime.modalities``; the built-in ones below), decoded by its ``from_wire``:

| input        | dtype  | dims         | what                                                    |
|--------------|--------|--------------|---------------------------------------------------------|
| `image`      | UINT8  | [-1, -1, 3]  | RGB pixels (the client decodes files and bytes)         |
| `text`       | BYTES  | [1]          | UTF-8 text                                              |
| `audio`      | FP32   | [-1]         | mono wave, at `audio_rate`                              |
| `audio_rate` | INT32  | [1]          | Hz (required with `audio`)                              |

| output                 | dtype | dims     | what                                                   |
|------------------------|-------|----------|--------------------------------------------------------|
| `probabilities`        | FP32  | [C]      | ensemble probabilities                                 |
| `member_probabilities` | FP32  | [K, C]   | calibrated member probabilities (NaN: did not run)     |
| `index`                | INT64 | [1]      | predicted class index                                  |
| `label`                | BYTES | [1]      | predicted label                                        |
| `meta`                 | BYTES | [1]      | JSON: backend, precision, members, skipped, note, ms   |

Bundles of a pretrained dual encoder (a ``similarity`` record: CLIP, SigLIP, CLAP) also score their
query modality (``image`` or ``audio``) against free texts, ``Session.similarity``: such a request
sends that modality's tensors and `queries` (BYTES [Q], UTF-8, the same Q texts on every row of a
request) instead of `text`, and gets `scores` (FP32 [Q], ``scale * cos + bias``), `query_probabilities`
(FP32 [Q], the model's softmax over the queries or sigmoid per pair), `index` and `label` (the best query).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from mmedge.errors import ConfigError, InputError
from mmedge.runtime.modalities import TensorSpec, get_modality, modalities

__all__ = ["OUTPUTS", "SIMILARITY_OUTPUTS", "QUERIES", "TensorSpec", "WireLimits", "RequestRows", "input_specs",
           "modality_inputs", "decode_request", "encode_outputs", "decode_outputs", "output_specs", "queries_spec",
           "similarity_output_specs", "encode_similarity", "decode_queries"]

PROBABILITIES, MEMBER_PROBABILITIES, INDEX, LABEL, META = (
    "probabilities", "member_probabilities", "index", "label", "meta")
QUERIES, SCORES, QUERY_PROBABILITIES = "queries", "scores", "query_probabilities"


def input_specs(names: Sequence[str] | None = None) -> tuple[TensorSpec, ...]:
    """The input tensors of the contract: those of every registered modality, or of ``names`` only."""
    records = modalities() if names is None else tuple(get_modality(n) for n in names)
    return tuple(t for record in records for t in record.wire)


def modality_inputs(modality: str) -> tuple[str, ...]:
    """The names of ``modality``'s input tensors (``audio``: ``audio``, ``audio_rate``)."""
    return tuple(t.name for t in get_modality(modality).wire)


def output_specs(num_classes: int, num_members: int) -> tuple[TensorSpec, ...]:
    """The output tensors for a bundle with ``num_classes`` labels and ``num_members`` members."""
    return (TensorSpec(PROBABILITIES, np.float32, (num_classes,)),
            TensorSpec(MEMBER_PROBABILITIES, np.float32, (num_members, num_classes)),
            TensorSpec(INDEX, np.int64, (1,)), TensorSpec(LABEL, object, (1,)), TensorSpec(META, object, (1,)))


OUTPUTS: tuple[str, ...] = (PROBABILITIES, MEMBER_PROBABILITIES, INDEX, LABEL, META)
SIMILARITY_OUTPUTS: tuple[str, ...] = (SCORES, QUERY_PROBABILITIES, INDEX, LABEL)


def queries_spec() -> TensorSpec:
    """The ``queries`` input of a similarity request: BYTES [Q] per row."""
    return TensorSpec(QUERIES, object, (-1,))


def similarity_output_specs() -> tuple[TensorSpec, ...]:
    """The outputs of a similarity request: each row's scores and activations over its Q queries, and the best."""
    return (TensorSpec(SCORES, np.float32, (-1,)), TensorSpec(QUERY_PROBABILITIES, np.float32, (-1,)),
            TensorSpec(INDEX, np.int64, (1,)), TensorSpec(LABEL, object, (1,)))


@dataclass(frozen=True)
class WireLimits:
    """What one request row on the serving wire may hold; larger payloads are refused with an
    ``InputError`` (a ``Session``'s own limits are ``mmedge.runtime.limits.Limits``).

    Attributes:
        max_image_side: Largest image height or width in pixels.
        max_text_bytes: Largest UTF-8 text.
        max_audio_seconds: Longest audio clip.
        audio_rates: Accepted range of ``audio_rate`` (Hz), inclusive.
        max_queries: Most ``queries`` texts of a similarity request (each at most ``max_text_bytes``).
    """

    max_image_side: int = 2048
    max_text_bytes: int = 4096
    max_audio_seconds: float = 30.0
    audio_rates: tuple[int, int] = (1000, 192000)
    max_queries: int = 64

    def __post_init__(self) -> None:
        if self.max_image_side < 1 or self.max_text_bytes < 1 or self.max_audio_seconds <= 0 or self.max_queries < 1:
            raise ConfigError(f"WireLimits must be positive, got {self}")

    def max_row_bytes(self) -> int:
        """The tensor bytes of the largest row these limits accept: every built-in modality at its limit, or a
        similarity row (its larger query modality and ``max_queries`` texts), whichever is larger."""
        image = self.max_image_side ** 2 * 3  # uint8 RGB
        audio = int(self.max_audio_seconds * self.audio_rates[1]) * 4 + 4  # float32 samples and the int32 rate
        text = self.max_text_bytes + 4  # BYTES: a 4-byte length prefix
        return max(image + text + audio, max(image, audio) + self.max_queries * text)

    def max_request_bytes(self, max_batch: int, overhead: int = 64 * 1024) -> int:
        """The largest request body worth reading for ``max_batch`` rows (for a front proxy's body limit)."""
        return max_batch * self.max_row_bytes() + overhead


@dataclass(frozen=True)
class RequestRows:
    """The rows of one request, checked: the modalities given and their items."""

    modalities: tuple[str, ...]
    size: int
    items: Mapping[str, list] = field(default_factory=dict)
    queries: tuple[str, ...] = ()  # a similarity request's texts (every row is scored against them)


def decode_request(data: Mapping[str, np.ndarray], limits: WireLimits = WireLimits()) -> RequestRows:
    """Checks one request's inputs and splits them into per-modality items.

    Args:
        data: input name -> batched array, as Triton delivers them.
        limits: The payload limits.

    Returns:
        The rows: per modality sent, its samples (its record's ``from_wire``): ``items["image"]``
        uint8 RGB arrays, ``items["text"]`` strings, ``items["audio"]`` ``(wave, rate)`` tuples.

    Raises:
        InputError: no input, an unknown input, batch sizes that differ, or a payload
            over ``limits``; ``queries`` with ``text``, rows with different queries, an empty query.
    """
    queries = decode_queries(data, limits) if QUERIES in data else ()
    query_rows = len(data[QUERIES]) if queries else None
    data = {k: v for k, v in data.items() if k != QUERIES}
    owners = {t.name: record for record in modalities() for t in record.wire}
    unknown = sorted(set(data) - set(owners))
    if unknown or not data:
        raise InputError(f"inputs must be among {sorted(owners)}; got {sorted(data)}")
    given = [r for r in modalities() if r.wire[0].name in data]  # a modality is sent with its first tensor
    for name in data:
        if owners[name] not in given:
            raise InputError(f"{name!r} was sent without {owners[name].wire[0].name!r}")
    items = {r.name: r.from_wire(data, limits) for r in given}
    sizes = {m: len(v) for m, v in items.items()}
    if len(set(sizes.values())) != 1 or 0 in sizes.values():
        raise InputError(f"every input of a request needs the same, non-zero batch size, got {sizes}")
    size = next(iter(sizes.values()))
    if query_rows not in (None, size):
        raise InputError(f"`queries` has {query_rows} rows for {size} rows of {list(items)}; send one per row")
    return RequestRows(tuple(items), size, items, queries)


def decode_queries(data: Mapping[str, np.ndarray], limits: WireLimits) -> tuple[str, ...]:
    """The texts of ``queries`` (BYTES (batch, Q)): the same on every row, each non-empty UTF-8.

    Raises:
        InputError: ``text`` sent too, no or too many queries, rows with other queries, an empty or
            over-long query, one that is not UTF-8.
    """
    from mmedge.runtime.wire import batched, texts_from_wire

    value = batched(data, QUERIES)
    if "text" in data:
        raise InputError("send `queries` (the texts to score against) or `text` (a member's input), not both")
    rows = value.reshape(len(value), -1)
    if rows.shape[1] == 0 or rows.shape[1] > limits.max_queries:
        raise InputError(f"send 1 to {limits.max_queries} queries per request, got {rows.shape[1]}")
    if any(not np.array_equal(row, rows[0]) for row in rows[1:]):
        raise InputError("every row of a request is scored against the same queries; send rows with other "
                         "queries as another request")
    texts = texts_from_wire({QUERIES: rows[0].reshape(-1, 1)}, limits, QUERIES)
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise InputError(f"queries {empty} are empty or whitespace only; send non-empty texts")
    return tuple(texts)


def encode_similarity(scores: np.ndarray, probabilities: np.ndarray, queries: Sequence[str]) -> dict[str, np.ndarray]:
    """The similarity outputs of (N, Q) ``scores`` and their ``probabilities``: the best query per row too."""
    best = np.asarray(scores).argmax(axis=1).astype(np.int64)  # (N,)
    return {SCORES: np.ascontiguousarray(scores, dtype=np.float32),
            QUERY_PROBABILITIES: np.ascontiguousarray(probabilities, dtype=np.float32),
            INDEX: best.reshape(-1, 1), LABEL: np.array([[queries[i].encode()] for i in best], dtype=object)}


def encode_outputs(pred: Any, members: Sequence[str], rows: slice) -> dict[str, np.ndarray]:
    """The output tensors for ``rows`` of a ``Prediction`` (batch axis first).

    Args:
        pred: The ``mmedge.runtime.Prediction`` of the batch.
        members: Every member of the bundle, in order (the rows of ``member_probabilities``).
        rows: Which rows of ``pred`` belong to this request.
    """
    probs = pred.probabilities[rows]  # (b, C)
    member_probs = np.full((len(probs), len(members), probs.shape[1]), np.nan, dtype=np.float32)  # (b, K, C)
    for k, name in enumerate(members):
        if name in pred.member_probabilities:
            member_probs[:, k] = pred.member_probabilities[name][rows]
    meta = json.dumps({"backend": pred.backend, "precision": pred.precision, "members": list(pred.members),
                       "all_members": list(members), "skipped_members": list(pred.skipped_members),
                       "note": pred.note, "timings_ms": {k: round(v, 3) for k, v in pred.timings_ms.items()}})
    labels = np.array([[label.encode()] for label in pred.labels[rows]], dtype=object)
    return {PROBABILITIES: np.ascontiguousarray(probs, dtype=np.float32), MEMBER_PROBABILITIES: member_probs,
            INDEX: pred.indices[rows].astype(np.int64).reshape(-1, 1), LABEL: labels,
            META: np.array([[meta.encode()]] * len(probs), dtype=object)}


def decode_outputs(outputs: Mapping[str, np.ndarray], *, request_ms: float | None = None) -> Any:
    """Builds the ``Prediction`` of one response from its output tensors.

    Args:
        outputs: output name -> array, as ``encode_outputs`` wrote them.
        request_ms: The client's round-trip time, kept as ``timings_ms["request"]``.
    """
    from mmedge.runtime.prediction import Prediction

    meta = json.loads(_as_bytes(outputs[META].reshape(-1)[0]).decode())
    names, member_probs = meta["all_members"], outputs[MEMBER_PROBABILITIES]
    ran = {n: np.ascontiguousarray(member_probs[:, k]) for k, n in enumerate(names) if n in meta["members"]}
    timings = {f"server.{k}": float(v) for k, v in meta["timings_ms"].items()}
    if request_ms is not None:
        timings["request"] = request_ms
    return Prediction(labels=[_as_bytes(v).decode() for v in outputs[LABEL].reshape(-1)],
                      indices=outputs[INDEX].reshape(-1).astype(np.int64),
                      probabilities=np.ascontiguousarray(outputs[PROBABILITIES], dtype=np.float32),
                      member_probabilities=ran, timings_ms=timings, backend=meta["backend"],
                      precision=meta["precision"], members=tuple(meta["members"]),
                      skipped_members=tuple(meta["skipped_members"]), note=meta["note"])


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
