"""ROS messages to model inputs, and predictions to ROS messages: plain functions.

Shared by ``mmedge replay`` and the ROS 2 node. They read the messages' fields only, so they take
``rosbags``' message objects and ``rclpy``'s alike. Every failure is a ``MessageError`` that says
what was wrong with the message and what is accepted; replay records it as a skip.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from mmedge.errors import InputError

__all__ = ["MessageError", "PixelFormat", "PIXEL_FORMATS", "SampleFormat", "SAMPLE_FORMATS", "AudioFormat",
           "stamp_ns", "image_from_msg", "text_from_msg", "audio_format_from_info", "audio_from_msg",
           "prediction_payload", "classification_results", "prediction_results", "prediction_body",
           "payload_json"]


class MessageError(InputError):
    """A message that cannot be turned into a model input (its encoding, size or content)."""


@dataclass(frozen=True)
class PixelFormat:
    """How a ``sensor_msgs/Image`` encoding lays out a pixel.

    Attributes:
        channels: Values per pixel in the message.
        dtype: numpy dtype of one value, little-endian (``is_bigendian`` swaps it).
        order: ``"RGB"``, ``"BGR"`` or ``"MONO"``: the colour channels (an alpha channel is dropped).
    """

    channels: int
    dtype: str
    order: str


PIXEL_FORMATS: dict[str, PixelFormat] = {  # sensor_msgs/image_encodings names
    "rgb8": PixelFormat(3, "<u1", "RGB"),
    "bgr8": PixelFormat(3, "<u1", "BGR"),
    "rgba8": PixelFormat(4, "<u1", "RGB"),
    "bgra8": PixelFormat(4, "<u1", "BGR"),
    "mono8": PixelFormat(1, "<u1", "MONO"),
    "mono16": PixelFormat(1, "<u2", "MONO"),
}
_COMPRESSED = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}


@dataclass(frozen=True)
class SampleFormat:
    """One audio sample format of ``audio_common_msgs/AudioInfo.sample_format``: dtype and full scale."""

    dtype: str
    full_scale: float
    offset: float = 0.0


SAMPLE_FORMATS: dict[str, SampleFormat] = {  # GStreamer names, as audio_common publishes them
    "S8": SampleFormat("i1", 128.0), "U8": SampleFormat("u1", 128.0, 128.0),
    "S16LE": SampleFormat("<i2", 32768.0), "S16BE": SampleFormat(">i2", 32768.0),
    "S32LE": SampleFormat("<i4", 2147483648.0), "S32BE": SampleFormat(">i4", 2147483648.0),
    "F32LE": SampleFormat("<f4", 1.0), "F32BE": SampleFormat(">f4", 1.0),
    "F64LE": SampleFormat("<f8", 1.0), "F64BE": SampleFormat(">f8", 1.0),
}


@dataclass(frozen=True)
class AudioFormat:
    """What ``audio_common_msgs/AudioInfo`` says about the ``AudioData`` chunks of a topic."""

    channels: int
    sample_rate: int
    sample_format: str = "S16LE"


def stamp_ns(msg: Any, fallback_ns: int) -> int:
    """The message's ``header.stamp`` in nanoseconds, or ``fallback_ns`` (the bag time) without a header."""
    header = getattr(msg, "header", None)
    if header is None:
        return int(fallback_ns)
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _raw_bytes(data: Any) -> np.ndarray:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.ascontiguousarray(np.asarray(data, dtype=np.uint8)).reshape(-1)  # numpy (rosbags), array.array (rclpy)


def _raw_image(msg: Any) -> np.ndarray:
    fmt = PIXEL_FORMATS.get(str(msg.encoding).lower())
    if fmt is None:
        raise MessageError(f"image encoding {msg.encoding!r} is not supported; use one of {sorted(PIXEL_FORMATS)} "
                           "or a sensor_msgs/CompressedImage (jpeg, png)")
    dtype = np.dtype(fmt.dtype).newbyteorder(">" if msg.is_bigendian else "<")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row = width * fmt.channels * dtype.itemsize
    data = _raw_bytes(msg.data)
    if height <= 0 or width <= 0 or step < row or data.size < step * height:
        raise MessageError(f"image of {width}x{height} {msg.encoding} with step {step} needs {step * height} bytes "
                           f"(step >= {row}); the message holds {data.size}")
    rows = data[: step * height].reshape(height, step)[:, :row]  # drops the step padding
    pixels = rows.copy().view(dtype).reshape(height, width, fmt.channels)
    if dtype.itemsize == 2:
        pixels = (pixels.astype(np.uint32) >> 8).astype(np.uint8)  # 16 bits -> the 8 the model takes
    if fmt.order == "MONO":
        return np.repeat(pixels.astype(np.uint8), 3, axis=2)
    pixels = pixels[..., :3].astype(np.uint8)
    return np.ascontiguousarray(pixels[..., ::-1] if fmt.order == "BGR" else pixels)


def _compressed_image(msg: Any) -> np.ndarray:
    import cv2

    kind = next((v for k, v in _COMPRESSED.items() if k in str(msg.format).lower()), None)
    if kind is None:
        raise MessageError(f"compressed image format {msg.format!r} is not supported; use jpeg or png")
    decoded = cv2.imdecode(_raw_bytes(msg.data), cv2.IMREAD_COLOR)
    if decoded is None:
        raise MessageError(f"compressed image ({msg.format}) of {len(msg.data)} bytes does not decode as {kind}")
    return np.ascontiguousarray(decoded[..., ::-1])


def image_from_msg(msg: Any) -> np.ndarray:
    """``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` -> RGB uint8 (H, W, 3).

    Raises:
        MessageError: an encoding outside ``PIXEL_FORMATS``, a format other than jpeg/png, data
            shorter than ``step * height``, or bytes that do not decode.
    """
    return _compressed_image(msg) if hasattr(msg, "format") else _raw_image(msg)


def text_from_msg(msg: Any) -> str:
    """``std_msgs/String`` -> its text (an empty caption is a ``MessageError``)."""
    text = str(msg.data)
    if not text.strip():
        raise MessageError("the caption message is empty; publish a non-empty std_msgs/String")
    return text


def audio_format_from_info(msg: Any) -> AudioFormat:
    """``audio_common_msgs/AudioInfo`` -> ``AudioFormat`` (raw PCM only: ``coding_format`` wave or empty)."""
    coding = str(getattr(msg, "coding_format", "") or "").lower()
    if coding not in ("", "wave", "wav", "raw", "pcm"):
        raise MessageError(f"audio coding_format {coding!r} is not supported; record raw PCM (coding_format 'wave')")
    if str(msg.sample_format) not in SAMPLE_FORMATS:
        raise MessageError(f"audio sample_format {msg.sample_format!r} is not supported; use one of "
                           f"{sorted(SAMPLE_FORMATS)}")
    if int(msg.channels) < 1 or int(msg.sample_rate) < 1:
        raise MessageError(f"AudioInfo says {msg.channels} channels at {msg.sample_rate} Hz; both must be positive")
    return AudioFormat(int(msg.channels), int(msg.sample_rate), str(msg.sample_format))


def audio_from_msg(msg: Any, fmt: AudioFormat) -> np.ndarray:
    """``audio_common_msgs/AudioData`` (or ``AudioDataStamped``) -> a mono float32 wave at ``fmt.sample_rate``.

    Interleaved channels are averaged. One message is one clip for the model.
    """
    data = _raw_bytes(getattr(msg, "audio", msg).data)
    sample = SAMPLE_FORMATS[fmt.sample_format]
    frame_bytes = np.dtype(sample.dtype).itemsize * fmt.channels
    if data.size == 0 or data.size % frame_bytes:
        raise MessageError(f"audio message of {data.size} bytes is not a whole number of {fmt.channels}-channel "
                           f"{fmt.sample_format} frames ({frame_bytes} bytes each)")
    values = (data.view(sample.dtype).astype(np.float32) - sample.offset) / sample.full_scale
    return values.reshape(-1, fmt.channels).mean(axis=1).astype(np.float32)


def prediction_payload(pred: Any, labels: Sequence[str], *, row: int = 0, query: str | None = None) -> dict[str, Any]:
    """One row of a ``Prediction`` as the JSON the ``std_msgs/String`` prediction topic carries.

    Returns:
        ``{"label", "probability", "probabilities": {label: p}, "timings_ms": {stage: ms}}``, plus
        ``"query"`` for an open-vocabulary query.
    """
    probs = np.asarray(pred.probabilities[row], dtype=np.float64)
    payload: dict[str, Any] = {"label": pred.labels[row], "probability": round(float(probs[int(pred.indices[row])]), 6),
                               "probabilities": {lab: round(float(p), 6) for lab, p in zip(labels, probs)},
                               "timings_ms": {k: round(float(v), 3) for k, v in pred.timings_ms.items()}}
    if query is not None:
        payload["query"] = query
    return payload


def classification_results(payload: dict[str, Any]) -> list[tuple[str, float]]:
    """``(class_id, score)`` pairs of a payload, best first: the ``vision_msgs/Classification`` results."""
    return sorted(payload["probabilities"].items(), key=lambda kv: -kv[1])


def prediction_results(payloads: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """The ``vision_msgs/Classification`` results of one prediction: every label of a single payload,
    or ``("<query>: <label>", probability)`` per query."""
    if len(payloads) == 1 and "query" not in payloads[0]:
        return classification_results(payloads[0])
    return [(f"{p['query']}: {p['label']}", p["probability"]) for p in payloads]


def prediction_body(payloads: list[dict[str, Any]], stamp_ns: int, frame_id: str) -> dict[str, Any]:
    """The JSON object of the ``std_msgs/String`` prediction: the payload (or ``queries``: one per query)
    with the input's ``stamp_ns`` and ``frame_id``."""
    stamp = {"stamp_ns": int(stamp_ns), "frame_id": frame_id}
    return dict(payloads[0], **stamp) if len(payloads) == 1 else dict(stamp, queries=payloads)


def payload_json(payload: dict[str, Any]) -> str:
    """The payload as compact JSON (the ``std_msgs/String`` data)."""
    return json.dumps(payload, separators=(",", ":"))
