"""Resize modes and interpolations (``mmedge.runtime.image_resize``): Pillow's filters reproduced exactly,
the geometry of squash / shortest_edge / letterbox, and the first bundles' modes unchanged."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from mmedge.errors import BundleError, InputError
from mmedge.runtime import Bundle
from mmedge.runtime.image_resize import INTERPOLATIONS, center_crop, shortest_edge_size
from mmedge.runtime.preprocess import preprocess_images, resize_mode_names
from mmedge.runtime.specs import ImageSpec, spec_from_dict, spec_to_dict

Image = pytest.importorskip("PIL.Image")
_PIL_CODES = {"nearest": 0, "bilinear": 2, "bicubic": 3}
UNIT = ImageSpec(size=8, mean=(0.0,) * 3, std=(1.0,) * 3)  # the tensor is the resized pixels / 255


def _random_sizes(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        h, w, oh, ow = (int(v) for v in rng.integers(1, 120, 4))
        yield rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (oh, ow)


@pytest.mark.parametrize("kind", sorted(_PIL_CODES))
def test_interpolations_equal_pillow_byte_for_byte(kind):
    """Up, down, mixed and 1-pixel sizes; both of Pillow 13's pass orders are hit (tall shrinks run rows first)."""
    for image, (oh, ow) in _random_sizes(60, seed=len(kind)):
        want = np.asarray(Image.fromarray(image).resize((ow, oh), resample=_PIL_CODES[kind]))
        np.testing.assert_array_equal(INTERPOLATIONS[kind].resize(image, (oh, ow)), want)


@pytest.mark.parametrize("kind", ["bilinear", "bicubic"])
def test_camera_frames_and_extreme_ratios_equal_pillow_byte_for_byte(kind):
    """Frame-sized images (many weight bands per pass, both pass orders, a flipped non-contiguous view),
    one-pass resizes and extreme shrinks and stretches (bands wider than the block) stay exact."""
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    cases = [(frame, (224, 298)), (frame, (224, 224)), (frame[:, ::-1], (600, 800)),
             (frame.transpose(1, 0, 2), (298, 224)),
             (frame, (480, 224)), (frame, (37, 640)), (frame[:2], (224, 224)), (frame[:, :1], (3, 5)),
             (rng.integers(0, 256, (1000, 3, 3), dtype=np.uint8), (7, 300))]
    for image, (oh, ow) in cases:
        want = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((ow, oh), resample=_PIL_CODES[kind]))
        got = INTERPOLATIONS[kind].resize(image, (oh, ow))
        assert got.dtype == np.uint8 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want, err_msg=f"{image.shape} -> {(oh, ow)}")


def test_shortest_edge_sizes_follow_hugging_face():
    assert shortest_edge_size(96, 160, 32) == (32, 53)  # int(32 * 160 / 96) = 53
    assert shortest_edge_size(333, 41, 32) == (259, 32)
    assert shortest_edge_size(50, 50, 32) == (32, 32)


def test_center_crop_crops_odd_gaps_low_and_pads_small_images():
    image = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)
    np.testing.assert_array_equal(center_crop(image, 2, 2), image[1:3, 1:3])  # (5-2)//2 = 1
    padded = center_crop(image, 7, 4)
    assert padded.shape == (7, 4, 3) and not padded[0].any() and not padded[-1].any()
    np.testing.assert_array_equal(padded[1:6], image)


def test_shortest_edge_then_crop_keeps_the_aspect():
    """A 2:1 photo with a left and a right half: CLIP's resize + crop keeps only the middle, no stretching."""
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, 40:] = 255
    spec = dataclasses.replace(UNIT, resize="shortest_edge", interpolation="bicubic")
    x = preprocess_images([image], spec)[0, 0]  # (8, 8): from a 8 x 16 resize, columns 4..11
    np.testing.assert_array_equal(x[:, :3], 0.0)
    np.testing.assert_array_equal(x[:, 5:], 1.0)


def test_letterbox_pads_with_the_spec_pad_value():
    image = np.full((20, 40, 3), 200, np.uint8)
    spec = dataclasses.replace(UNIT, resize="letterbox", interpolation="bilinear", pad_value=114)
    x = preprocess_images([image], spec)[0, 0] * 255  # 8 wide, 4 high, centred: rows 2..5
    np.testing.assert_allclose(x[2:6], 200, atol=1e-3)
    np.testing.assert_allclose(np.concatenate([x[:2], x[6:]]), 114, atol=1e-3)


def test_squash_with_a_resize_size_crops_the_centre():
    image = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    spec = dataclasses.replace(UNIT, resize="squash", interpolation="bicubic", resize_size=10)
    want = np.asarray(Image.fromarray(image).resize((10, 10), resample=3))[1:9, 1:9]
    np.testing.assert_allclose(preprocess_images([image], spec)[0].transpose(1, 2, 0), want / 255.0, atol=1e-6)


@pytest.mark.parametrize("mode,flag", [("bilinear", cv2.INTER_LINEAR), ("area", cv2.INTER_AREA),
                                       ("nearest", cv2.INTER_NEAREST)])
def test_the_first_bundles_modes_are_opencvs_squash_whatever_the_interpolation(mode, flag):
    image = np.random.default_rng(1).integers(0, 256, (37, 61, 3), dtype=np.uint8)
    want = cv2.resize(image, (8, 8), interpolation=flag).astype(np.float32) * np.float32(1.0 / 255.0)
    for interpolation in ("cv2_bilinear", "bicubic"):
        spec = dataclasses.replace(UNIT, resize=mode, interpolation=interpolation)
        np.testing.assert_array_equal(preprocess_images([image], spec)[0].transpose(1, 2, 0), want)


def test_every_mode_gives_the_square_input():
    image = np.random.default_rng(2).integers(0, 256, (13, 71, 3), dtype=np.uint8)
    for mode in resize_mode_names():
        assert preprocess_images([image], dataclasses.replace(UNIT, resize=mode)).shape == (1, 3, 8, 8), mode


def test_an_unknown_interpolation_is_refused():
    with pytest.raises(InputError, match="interpolation.*bicubic"):
        preprocess_images([np.zeros((4, 4, 3), np.uint8)], dataclasses.replace(UNIT, resize="squash",
                                                                             interpolation="lanczos"))


def test_old_specs_read_with_todays_resize_and_new_ones_round_trip():
    old = {"size": 64, "resize": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3, "channel_order": "RGB"}
    spec = spec_from_dict(ImageSpec, old)
    assert (spec.interpolation, spec.resize_size, spec.pad_value, spec.convert_rgb) == ("cv2_bilinear", 0, 0, True)
    new = dataclasses.replace(spec, resize="letterbox", interpolation="bicubic", resize_size=72, pad_value=114)
    assert spec_from_dict(ImageSpec, spec_to_dict(new)) == new


def test_the_manifest_schema_checks_the_new_fields(bundle_path, tmp_path, tools):
    for key, value, match in (("interpolation", "lanczos", r"inputs\.image\.interpolation.*bicubic"),
                              ("pad_value", 300, r"inputs\.image\.pad_value"),
                              ("resize_size", -1, r"inputs\.image\.resize_size")):
        folder = tools.clone(bundle_path, tmp_path / key)
        tools.edit_manifest(folder, lambda m: m["inputs"]["image"].update({key: value}))
        with pytest.raises(BundleError, match=match):
            Bundle.open(folder)
