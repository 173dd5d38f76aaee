"""``mmedge run``: every bad argument ends in a one-line typed error (exit status 2) that names it,
never a traceback (issue 11)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mmedge.cli import app
from mmedge.runtime import Session


def _run(*args: str):
    return CliRunner().invoke(app, ["run", *args])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import cv2

    folder = tmp_path_factory.mktemp("inputs")
    cv2.imwrite(str(folder / "digit.png"), np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    (folder / "not_an_image.png").write_text("hello")
    (folder / "not_audio.wav").write_bytes(b"RIFF0000WAVEjunk")
    return folder


def test_run_prints_a_prediction(bundle_path, files):
    result = _run(str(bundle_path), "--image", str(files / "digit.png"), "--text", "seven", "--json")
    assert result.exit_code == 0, result.output
    with Session(bundle_path) as session:  # what auto chooses for this bundle here (OpenVINO: checked graphs only)
        auto = session.backend
    assert json.loads(result.output.strip().splitlines()[-1])["backend"] == auto


@pytest.mark.parametrize("args, says", [
    (["--text", "seven"], "image"),
    ([], "pass at least one input"),
    (["--image", "{files}/digit.png", "--text", "caf\udce9"], "text[0]"),
    (["--image", "{files}/digit.png", "--text", "   "], "text[0]"),
    (["--image", "{files}/digit.png", "--text", "x" * 20_000], "max_text_chars"),
    (["--image", "{files}/missing.png", "--text", "seven"], "image file not found"),
    (["--image", "{files}/not_an_image.png", "--text", "seven"], "cannot decode image"),
    (["--image", "{files}/digit.png", "--text", "seven", "--audio", "{files}/not_audio.wav"], "audio[0]"),
    (["--image", "{files}/digit.png", "--text", "seven", "--precision", "int4"], "precision 'int4'"),
    (["--image", "{files}/digit.png", "--text", "seven", "--backend", "gpu"], "unknown backend"),
])
def test_bad_run_arguments_are_one_typed_line(bundle_path, files, args, says):
    result = _run(str(bundle_path), *[a.format(files=files) for a in args])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "error:" in text and says in text, text
    assert "Traceback" not in result.output


def test_run_on_a_missing_or_damaged_bundle(tmp_path):
    assert "bundle not found" in " ".join(_run(str(tmp_path / "none"), "--text", "x").output.split())
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text('{"format": "mmedge.bundle/1", "task": 3}')
    result = _run(str(tmp_path / "b"), "--text", "x")
    assert result.exit_code == 2 and "invalid bundle manifest" in result.output


def test_inspect_a_bundle_without_a_name(bundle_path, tmp_path, tools):
    folder = tools.clone(bundle_path, tmp_path / "b")
    tools.edit_manifest(folder, lambda m: m.pop("name"))
    result = CliRunner().invoke(app, ["inspect", str(folder)])
    assert result.exit_code == 0, result.output
