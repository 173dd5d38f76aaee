"""``mmedge bench`` end to end: a short real run on a real small bundle, with the PyTorch baseline.

The bundle is the shared fixture of ``tests/conftest.py``;
the checkpoint is written from the same torch modules, and the data is a small JSONL
dataset of real files. No timing is asserted: only that every section is there.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmedge.cli import app
from mmedge.bench import validate_report


@pytest.fixture(scope="module")
def checkpoint(torch_ensemble, built, tmp_path_factory) -> Path:
    """A checkpoint folder holding the torch modules the fixture bundle was exported from."""
    from mmedge.checkpoint import save_checkpoint
    from mmedge.encoders.text import MiniLMEncoder

    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "run", torch_ensemble(), labels=built.labels, metrics={},
                           tokenizer_file=MiniLMEncoder.tokenizer_file())


@pytest.fixture(scope="module")
def jsonl(built, tmp_path_factory) -> Path:
    """Ten test rows (one per label) of real PNG images, WAV clips and captions."""
    import cv2
    import soundfile

    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    lines = []
    for i, label in enumerate(built.labels):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
        soundfile.write(folder / f"{i}.wav", (rng.standard_normal(8000) * 0.1).astype(np.float32), 16000)
        lines.append(json.dumps({"image": f"{i}.png", "audio": f"{i}.wav", "text": f"the digit {label}",
                                 "label": label, "split": "test"}))
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "test.jsonl"


def test_short_bench_run_writes_every_section(built, checkpoint, jsonl, tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "latency.png"
    # One thread: on a small, busy CI box multi-threaded torch eager can stall for seconds per call.
    result = CliRunner().invoke(app, [
        "bench", str(built.path), "--data", str(jsonl), "--batch", "1,2", "--iters", "3", "--warmup", "1",
        "--threads", "1", "--accuracy-samples", "4", "--baseline", "torch", "--checkpoint", str(checkpoint),
        "--json", str(out), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert validate_report(report) == []
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    kinds = {(c["kind"], c["batch"]) for c in report["configs"]}
    assert kinds == {(k, b) for k in ("ensemble", "member", "torch") for b in (1, 2)}
    for cfg in report["configs"]:
        assert cfg["latency_ms"]["n"] == 3 == len(cfg["samples_ms"])
        assert {"total", "encoder.image", "encoder.text", "ensemble"} <= set(cfg["stages_ms"])
        assert cfg["roofline"] is not None and cfg["flops_per_sample"] > 0
    ensemble = next(c for c in report["configs"] if c["kind"] == "ensemble")
    assert {"preprocess.audio", "head.concat", "head.cross_attention"} <= set(ensemble["stages_ms"])
    member = next(c for c in report["configs"] if c["kind"] == "member")
    heads = {k for k in member["stages_ms"] if k.startswith("head.")}
    assert heads == {f"head.{member['members'][0]}"}  # Session(members=[...]) ran that head only
    names = [c["name"] for c in report["comparisons"]]
    assert any("PyTorch eager" in n for n in names) and any("most accurate member on validation (cross_attention)" in n for n in names)
    assert set(report["accuracy"]) == {"fp32/ort", "torch/eager"}
    assert report["accuracy"]["fp32/ort"]["samples"] == 4
    assert report["import"][0]["torch_imported"] is False
    tegra = report["device"]["tegrastats"]
    assert isinstance(tegra["available"], bool) and (tegra["available"] or "not available" in tegra["note"])
    assert report["member_choice"]["chosen"] == "cross_attention"  # 0.7 > 0.5 on validation
    footprint = report["memory"]["torch_free_process"]["fp32"]
    assert footprint["heavy_modules_imported"] == [] and footprint["rss_after_predict_bytes"] > 0
    assert footprint["first_prediction_s"] > 0
    assert set(report["flops"]["per_sample"]) == {"encoder.image", "encoder.text", "encoder.audio",
                                                   "head.concat", "head.cross_attention"}
    assert report["environment"]["threads"] == {"ort_intra_op": 1, "torch": 1}
    assert report["bundle"]["sha256"] and report["bundle"]["size_bytes"] > 0
    assert "end-to-end latency" in result.output and "tegrastats" in result.output


@pytest.mark.parametrize("args, message", [
    (["--precision", "fp64"], "precision 'fp64' is not in the bundle"),
    (["--precision", "int8"], "precision 'int8' has status"),
    (["--batch", "one"], "comma-separated integers"),
    ([], "pass --data"),
])
def test_bad_flags_are_typed_errors(built, args, message):
    result = CliRunner().invoke(app, ["bench", str(built.path), *args])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # rich wraps long lines at the terminal width
    assert text.startswith("error:") and message in text and "Traceback" not in text


def test_missing_checkpoint_is_an_error(built, jsonl):
    result = CliRunner().invoke(app, ["bench", str(built.path), "--data", str(jsonl), "--baseline", "torch",
                                      "--iters", "1", "--warmup", "0", "--accuracy-samples", "0",
                                      "--no-members-compare"])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "--checkpoint" in result.output
