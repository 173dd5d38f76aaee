"""Bags written the way a robot records them, with ``rosbags``' own writers (not mmedge's code).

Rows are real: scikit-learn's handwritten digits (upscaled RGB), a caption naming the digit, and a
spoken-length audio clip (a tone per digit in noise), stamped at 10 Hz with jitter per topic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RATE = 16000
BASE_NS = 1_700_000_000_000_000_000


@dataclass
class Rows:
    """The reference rows: what ``Session.predict`` gets directly."""

    images: list[np.ndarray] = field(default_factory=list)  # RGB uint8 (H, W, 3)
    texts: list[str] = field(default_factory=list)
    waves: list[np.ndarray] = field(default_factory=list)  # float32 at RATE, exactly what S16LE holds
    stamps: list[int] = field(default_factory=list)  # image header stamps (ns)


def reference_rows(n: int, seed: int = 0) -> Rows:
    """``n`` rows of digits, captions and clips."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    digits = load_digits()
    rows = Rows()
    for i in range(n):
        gray = (digits.images[i] * (255 / 16)).astype(np.uint8)
        big = cv2.resize(gray, (48, 40), interpolation=cv2.INTER_NEAREST)
        rows.images.append(np.stack([big, 255 - big, big // 2], axis=2))
        rows.texts.append(f"a handwritten {WORDS[digits.target[i]]}")
        t = np.arange(RATE // 2) / RATE
        wave = 0.3 * np.sin(2 * np.pi * (200 + 50 * digits.target[i]) * t) + 0.05 * rng.standard_normal(t.size)
        pcm = np.clip(wave * 32768, -32768, 32767).astype("<i2")
        rows.waves.append(pcm.astype(np.float32) / 32768.0)
        rows.stamps.append(BASE_NS + i * 100_000_000 + int(rng.integers(-3, 4)) * 1_000_000)
    return rows


def _store():
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = get_types_from_msg("uint8[] data\n", "audio_common_msgs/msg/AudioData")
    types.update(get_types_from_msg("uint8 channels\nuint32 sample_rate\nstring sample_format\nuint32 bitrate\n"
                                    "string coding_format\n", "audio_common_msgs/msg/AudioInfo"))
    store.register(types)
    return store


def _header(store, stamp: int, frame: str = "camera"):
    t = store.types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9)
    return store.types["std_msgs/msg/Header"](stamp=t, frame_id=frame)


def image_msg(store, image: np.ndarray, stamp: int, encoding: str = "rgb8", pad: int = 0):
    """A ``sensor_msgs/Image`` of an RGB image in ``encoding`` (rgb8 or bgr8), rows padded by ``pad`` bytes."""
    pixels = image if encoding == "rgb8" else image[..., ::-1]
    h, w, _ = pixels.shape
    rows = np.zeros((h, w * 3 + pad), np.uint8)
    rows[:, : w * 3] = pixels.reshape(h, w * 3)
    return store.types["sensor_msgs/msg/Image"](header=_header(store, stamp), height=h, width=w, encoding=encoding,
                                                is_bigendian=0, step=w * 3 + pad, data=rows.reshape(-1))


def compressed_msg(store, image: np.ndarray, stamp: int):
    """A lossless ``sensor_msgs/CompressedImage`` (png) of an RGB image."""
    ok, buf = cv2.imencode(".png", image[..., ::-1])
    return store.types["sensor_msgs/msg/CompressedImage"](header=_header(store, stamp), format="png",
                                                          data=buf.reshape(-1))


def write_bag(path: Path, rows: Rows, *, compressed: bool = False, storage: str = "mcap", encoding: str = "rgb8",
              audio: bool = True, corrupt: tuple[int, ...] = (), audio_shift_ns: int = 0) -> Path:
    """A rosbag2 (``/camera``, ``/caption``, ``/audio``, ``/audio_info``) of ``rows``.

    Captions arrive 20 ms before their frame; audio with its own jitter (plus ``audio_shift_ns``);
    the image messages at the indices in ``corrupt`` are cut to a few bytes.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = _store()
    rng = np.random.default_rng(1)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    img_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    with Writer(path, version=9, storage_plugin=plugin) as w:
        cam = w.add_connection("/camera", img_type, typestore=store)
        cap = w.add_connection("/caption", "std_msgs/msg/String", typestore=store)
        aud = w.add_connection("/audio", "audio_common_msgs/msg/AudioData", typestore=store)
        info = w.add_connection("/audio_info", "audio_common_msgs/msg/AudioInfo", typestore=store)
        if audio:
            msg = store.types["audio_common_msgs/msg/AudioInfo"](channels=1, sample_rate=RATE, sample_format="S16LE",
                                                                 bitrate=0, coding_format="wave")
            w.write(info, rows.stamps[0] - 50_000_000, store.serialize_cdr(msg, info.msgtype))
        for i, stamp in enumerate(rows.stamps):
            text = store.types["std_msgs/msg/String"](data=rows.texts[i])
            w.write(cap, stamp - 20_000_000, store.serialize_cdr(text, cap.msgtype))
            msg = compressed_msg(store, rows.images[i], stamp) if compressed else \
                image_msg(store, rows.images[i], stamp, encoding, pad=4 * (i % 2))
            raw = store.serialize_cdr(msg, img_type)
            w.write(cam, stamp, raw[:7] if i in corrupt else raw)
            if audio:
                pcm = np.round(rows.waves[i] * 32768).astype("<i2").view(np.uint8)
                when = stamp + int(rng.integers(-8, 9)) * 1_000_000 + audio_shift_ns
                w.write(aud, when, store.serialize_cdr(store.types["audio_common_msgs/msg/AudioData"](data=pcm),
                                                       aud.msgtype))
    return path


def write_chunked_audio_bag(path: Path, rows: Rows, chunk: int = RATE // 10) -> tuple[Path, np.ndarray, list[int]]:
    """A rosbag2 with ``/camera`` and ``/caption`` as ``write_bag`` makes them, and the clips of ``rows``
    played back to back as a microphone publishes them: ``AudioData`` chunks of ``chunk`` samples,
    each at the bag time of its last sample.

    Returns:
        The bag, the whole stream (float32) and each chunk's time (ns).
    """
    from rosbags.rosbag2 import Writer

    store = _store()
    stream = np.concatenate(rows.waves)
    times = [BASE_NS + int((k + 1) * chunk / RATE * 1e9) for k in range(len(stream) // chunk)]
    with Writer(path, version=9) as w:
        cam = w.add_connection("/camera", "sensor_msgs/msg/Image", typestore=store)
        cap = w.add_connection("/caption", "std_msgs/msg/String", typestore=store)
        aud = w.add_connection("/audio", "audio_common_msgs/msg/AudioData", typestore=store)
        info = w.add_connection("/audio_info", "audio_common_msgs/msg/AudioInfo", typestore=store)
        msg = store.types["audio_common_msgs/msg/AudioInfo"](channels=1, sample_rate=RATE, sample_format="S16LE",
                                                             bitrate=0, coding_format="wave")
        w.write(info, BASE_NS - 1, store.serialize_cdr(msg, info.msgtype))
        for k, when in enumerate(times):
            pcm = np.round(stream[k * chunk:(k + 1) * chunk] * 32768).astype("<i2").view(np.uint8)
            data = store.types["audio_common_msgs/msg/AudioData"](data=pcm)
            w.write(aud, when, store.serialize_cdr(data, aud.msgtype))
        for i, stamp in enumerate(rows.stamps):
            text = store.types["std_msgs/msg/String"](data=rows.texts[i])
            w.write(cap, stamp - 20_000_000, store.serialize_cdr(text, cap.msgtype))
            w.write(cam, stamp, store.serialize_cdr(image_msg(store, rows.images[i], stamp), cam.msgtype))
    return path, stream, times
