"""ROS messages to model inputs: every image encoding, compressed images, captions, audio formats."""
from __future__ import annotations

import subprocess
import sys
import types

import cv2
import numpy as np
import pytest

from mmedge.robotics.convert import (PIXEL_FORMATS, AudioFormat, MessageError, audio_format_from_info, audio_from_msg,
                                     classification_results, image_from_msg, prediction_payload, stamp_ns,
                                     text_from_msg)

RNG = np.random.default_rng(3)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def _image(encoding, pixels, *, pad=0, bigendian=False):
    h, w = pixels.shape[:2]
    row = pixels.reshape(h, -1).view(np.uint8)
    data = np.zeros((h, row.shape[1] + pad), np.uint8)
    data[:, : row.shape[1]] = row
    return types.SimpleNamespace(encoding=encoding, height=h, width=w, step=data.shape[1],
                                 is_bigendian=int(bigendian), data=data.reshape(-1))


@pytest.mark.parametrize("pad", [0, 3])
def test_colour_encodings_give_rgb(pad):
    alpha = np.full((5, 7, 1), 9, np.uint8)
    cases = {"rgb8": RGB, "bgr8": RGB[..., ::-1], "rgba8": np.concatenate([RGB, alpha], 2),
             "bgra8": np.concatenate([RGB[..., ::-1], alpha], 2)}
    assert set(cases) | {"mono8", "mono16"} == set(PIXEL_FORMATS)
    for encoding, pixels in cases.items():
        np.testing.assert_array_equal(image_from_msg(_image(encoding, np.ascontiguousarray(pixels), pad=pad)), RGB)


@pytest.mark.parametrize("bigendian", [False, True])
def test_mono_encodings(bigendian):
    gray = RGB[..., 0]
    np.testing.assert_array_equal(image_from_msg(_image("mono8", gray[..., None], pad=2)), np.stack([gray] * 3, 2))
    wide = (gray.astype(np.uint16) << 8 | 0x7F).astype(">u2" if bigendian else "<u2")
    out = image_from_msg(_image("mono16", wide[..., None], pad=2, bigendian=bigendian))
    np.testing.assert_array_equal(out, np.stack([gray] * 3, 2))


def test_bytes_data_and_bad_images():
    msg = _image("rgb8", RGB)
    msg.data = msg.data.tobytes()  # rclpy / ROS 1 hand bytes
    np.testing.assert_array_equal(image_from_msg(msg), RGB)
    with pytest.raises(MessageError, match="encoding 'yuv422' is not supported"):
        image_from_msg(_image("yuv422", RGB))
    short = _image("rgb8", RGB)
    short.data = short.data[:10]
    with pytest.raises(MessageError, match="needs 105 bytes"):
        image_from_msg(short)


def test_compressed_images():
    png = types.SimpleNamespace(format="png", data=cv2.imencode(".png", RGB[..., ::-1])[1].reshape(-1))
    np.testing.assert_array_equal(image_from_msg(png), RGB)
    smooth = np.stack([*np.meshgrid(np.arange(0, 256, 16), np.arange(0, 256, 16)), np.full((16, 16), 99)], 2)
    smooth = smooth.astype(np.uint8)
    jpeg = types.SimpleNamespace(format="rgb8; jpeg compressed bgr8",
                                 data=cv2.imencode(".jpg", smooth[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])[1])
    assert np.abs(image_from_msg(jpeg).astype(int) - smooth).mean() < 3
    with pytest.raises(MessageError, match="format 'tiff' is not supported"):
        image_from_msg(types.SimpleNamespace(format="tiff", data=b"x"))
    with pytest.raises(MessageError, match="does not decode"):
        image_from_msg(types.SimpleNamespace(format="png", data=b"not a png"))


def test_text_and_stamps():
    assert text_from_msg(types.SimpleNamespace(data="a dog")) == "a dog"
    with pytest.raises(MessageError, match="empty"):
        text_from_msg(types.SimpleNamespace(data="  "))
    header = types.SimpleNamespace(stamp=types.SimpleNamespace(sec=3, nanosec=5))
    assert stamp_ns(types.SimpleNamespace(header=header), 7) == 3_000_000_005
    assert stamp_ns(types.SimpleNamespace(data=b""), 7) == 7


@pytest.mark.parametrize("fmt,dtype,scale", [("S16LE", "<i2", 32768), ("S32BE", ">i4", 2**31), ("F32LE", "<f4", 1)])
def test_audio_formats_and_channels(fmt, dtype, scale):
    wave = np.linspace(-0.5, 0.5, 64, dtype=np.float32)
    stereo = np.stack([wave, wave / 2], axis=1)  # interleaved L R
    raw = (stereo * scale).astype(dtype).reshape(-1).view(np.uint8)
    info = audio_format_from_info(types.SimpleNamespace(channels=2, sample_rate=8000, sample_format=fmt,
                                                        coding_format="wave"))
    assert info == AudioFormat(2, 8000, fmt)
    got = audio_from_msg(types.SimpleNamespace(data=raw), info)
    np.testing.assert_allclose(got, wave * 0.75, atol=1e-4)
    with pytest.raises(MessageError, match="whole number"):
        audio_from_msg(types.SimpleNamespace(data=raw[:-1]), info)


def test_bad_audio_info():
    with pytest.raises(MessageError, match="coding_format 'mp3'"):
        audio_format_from_info(types.SimpleNamespace(channels=1, sample_rate=1, sample_format="S16LE",
                                                     coding_format="mp3"))
    with pytest.raises(MessageError, match="sample_format 'S24LE'"):
        audio_format_from_info(types.SimpleNamespace(channels=1, sample_rate=1, sample_format="S24LE",
                                                     coding_format=""))


def test_payload_and_classification_results():
    pred = types.SimpleNamespace(labels=["b"], indices=np.array([1]), probabilities=np.array([[0.25, 0.75]]),
                                 timings_ms={"total": 1.23456})
    payload = prediction_payload(pred, ["a", "b"])
    assert payload == {"label": "b", "probability": 0.75, "probabilities": {"a": 0.25, "b": 0.75},
                       "timings_ms": {"total": 1.235}}
    assert classification_results(payload) == [("b", 0.75), ("a", 0.25)]


def test_robotics_and_node_import_without_torch_or_rclpy():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['rclpy'] = None; "
            "import mmedge.robotics.replayer, mmedge.ros, mmedge.cli.replay; "
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
