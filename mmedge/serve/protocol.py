"""The wire contract of an mmedge model on Triton, shared by the server, the client and the repository.

numpy only: no pytriton, no tritonclient, never torch. Every served mmedge model (``mmedge serve``,
and the ensembles ``mmedge triton`` writes) takes and returns these tensors, per row (Triton
prepends the batch axis):

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
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from mmedge.errors import ConfigError, InputError

__all__ = ["IMAGE", "TEXT", "AUDIO", "AUDIO_RATE", "INPUTS", "OUTPUTS", "MODALITY_INPUTS", "TensorSpec", "Limits",
           "RequestRows", "decode_request", "encode_outputs", "decode_outputs", "output_specs"]

IMAGE, TEXT, AUDIO, AUDIO_RATE = "image", "text", "audio", "audio_rate"
PROBABILITIES, MEMBER_PROBABILITIES, INDEX, LABEL, META = (
    "probabilities", "member_probabilities", "index", "label", "meta")


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the contract: name, numpy dtype (``object`` for BYTES) and dims without batch."""

    name: str
    dtype: Any
    dims: tuple[int, ...]

    @property
    def triton_dtype(self) -> str:
        """The Triton wire type (``FP32``, ``BYTES``...)."""
        return _TRITON_DTYPES[np.dtype(self.dtype)]


_TRITON_DTYPES = {np.dtype(np.uint8): "UINT8", np.dtype(np.float32): "FP32", np.dtype(np.int32): "INT32",
                  np.dtype(np.int64): "INT64", np.dtype(object): "BYTES", np.dtype(np.float16): "FP16",
                  np.dtype(np.int8): "INT8", np.dtype(np.float64): "FP64", np.dtype(np.bool_): "BOOL"}

INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(IMAGE, np.uint8, (-1, -1, 3)), TensorSpec(TEXT, object, (1,)),
    TensorSpec(AUDIO, np.float32, (-1,)), TensorSpec(AUDIO_RATE, np.int32, (1,)))
MODALITY_INPUTS: Mapping[str, tuple[str, ...]] = {IMAGE: (IMAGE,), TEXT: (TEXT,), AUDIO: (AUDIO, AUDIO_RATE)}


def output_specs(num_classes: int, num_members: int) -> tuple[TensorSpec, ...]:
    """The output tensors for a bundle with ``num_classes`` labels and ``num_members`` members."""
    return (TensorSpec(PROBABILITIES, np.float32, (num_classes,)),
            TensorSpec(MEMBER_PROBABILITIES, np.float32, (num_members, num_classes)),
            TensorSpec(INDEX, np.int64, (1,)), TensorSpec(LABEL, object, (1,)), TensorSpec(META, object, (1,)))


OUTPUTS: tuple[str, ...] = (PROBABILITIES, MEMBER_PROBABILITIES, INDEX, LABEL, META)


@dataclass(frozen=True)
class Limits:
    """What one request row may hold; larger payloads are refused with an ``InputError``.

    Attributes:
        max_image_side: Largest image height or width in pixels.
        max_text_bytes: Largest UTF-8 text.
        max_audio_seconds: Longest audio clip.
        audio_rates: Accepted range of ``audio_rate`` (Hz), inclusive.
    """

    max_image_side: int = 2048
    max_text_bytes: int = 4096
    max_audio_seconds: float = 30.0
    audio_rates: tuple[int, int] = (1000, 192000)

    def __post_init__(self) -> None:
        if self.max_image_side < 1 or self.max_text_bytes < 1 or self.max_audio_seconds <= 0:
            raise ConfigError(f"Limits must be positive, got {self}")


@dataclass(frozen=True)
class RequestRows:
    """The rows of one request, checked: the modalities given and their items."""

    modalities: tuple[str, ...]
    size: int
    items: Mapping[str, list] = field(default_factory=dict)


def _rows(data: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    value = data[name]
    if not isinstance(value, np.ndarray) or value.ndim < 1:
        raise InputError(f"input {name!r} must be a batched array, got {type(value).__name__}")
    return value


def _texts(value: np.ndarray, limits: Limits) -> list[str]:
    texts = []
    for i, raw in enumerate(value.reshape(len(value), -1)[:, 0]):
        raw = raw if isinstance(raw, bytes) else str(raw).encode()
        if len(raw) > limits.max_text_bytes:
            raise InputError(f"text[{i}] has {len(raw)} bytes; the server accepts at most {limits.max_text_bytes}")
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError(f"text[{i}] is not valid UTF-8; send UTF-8 encoded text") from None
    return texts


def _images(value: np.ndarray, limits: Limits) -> list[np.ndarray]:
    side = max(value.shape[1:3]) if value.ndim == 4 else 0
    if value.ndim != 4 or value.shape[3] != 3 or value.dtype != np.uint8 or 0 in value.shape[1:3]:
        raise InputError(f"image must be uint8 (batch, H, W, 3) RGB pixels, got {value.dtype} {list(value.shape)}")
    if side > limits.max_image_side:
        raise InputError(f"image is {value.shape[2]}x{value.shape[1]} pixels; the server accepts at most "
                         f"{limits.max_image_side} pixels a side: resize it first")
    return list(value)


def _waves(data: Mapping[str, np.ndarray], limits: Limits) -> list[tuple[np.ndarray, int]]:
    if AUDIO_RATE not in data:
        raise InputError(f"input {AUDIO!r} needs {AUDIO_RATE!r} (Hz, int32, one per row) as well")
    waves, rates = _rows(data, AUDIO), _rows(data, AUDIO_RATE).reshape(-1)
    if waves.ndim != 2 or len(rates) != len(waves):
        raise InputError(f"audio must be (batch, samples) with one audio_rate per row, got {list(waves.shape)} "
                         f"and {len(rates)} rates")
    lo, hi = limits.audio_rates
    for i, rate in enumerate(rates):
        if not lo <= int(rate) <= hi:
            raise InputError(f"audio_rate[{i}] is {int(rate)} Hz; send a rate between {lo} and {hi} Hz")
        if waves.shape[1] > limits.max_audio_seconds * int(rate):
            raise InputError(f"audio[{i}] is {waves.shape[1] / int(rate):.1f} s long; the server accepts at most "
                             f"{limits.max_audio_seconds:g} s: cut it first")
    return [(np.asarray(w, dtype=np.float32), int(r)) for w, r in zip(waves, rates)]


def decode_request(data: Mapping[str, np.ndarray], limits: Limits = Limits()) -> RequestRows:
    """Checks one request's inputs and splits them into per-modality items.

    Args:
        data: input name -> batched array, as Triton delivers them.
        limits: The payload limits.

    Returns:
        The rows: ``items["image"]`` uint8 RGB arrays, ``items["text"]`` strings,
        ``items["audio"]`` ``(wave, rate)`` tuples.

    Raises:
        InputError: no input, an unknown input, batch sizes that differ, or a payload
            over ``limits``.
    """
    known = {t.name for t in INPUTS}
    unknown = sorted(set(data) - known)
    if unknown or not data:
        raise InputError(f"inputs must be among {sorted(known)}; got {sorted(data)}")
    if AUDIO_RATE in data and AUDIO not in data:
        raise InputError(f"{AUDIO_RATE!r} was sent without {AUDIO!r}")
    items: dict[str, list] = {}
    if IMAGE in data:
        items[IMAGE] = _images(_rows(data, IMAGE), limits)
    if TEXT in data:
        items[TEXT] = _texts(_rows(data, TEXT), limits)
    if AUDIO in data:
        items[AUDIO] = _waves(data, limits)
    sizes = {m: len(v) for m, v in items.items()}
    if len(set(sizes.values())) != 1 or 0 in sizes.values():
        raise InputError(f"every input of a request needs the same, non-zero batch size, got {sizes}")
    return RequestRows(tuple(items), next(iter(sizes.values())), items)


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
