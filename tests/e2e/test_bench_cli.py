"""``mmedge bench`` end to end: a short real run on a real small bundle, with the PyTorch baseline
(in this process and in its own), and the per-encoder peers comparison.

The bundle is the shared fixture of ``tests/conftest.py``;
the checkpoint is written from the same torch modules, and the data is a small JSONL
dataset of real files. No timing is asserted: only that every section is there.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmedge.cli import app
from mmedge.bench import validate_report
from mmedge.bench.schema import validate_peers


@pytest.fixture(scope="module")
def checkpoint(torch_ensemble, built, tmp_path_factory) -> Path:
    """A checkpoint folder holding the torch modules the fixture bundle was exported from."""
    from mmedge.checkpoint import save_checkpoint
    from mmedge.encoders.text import MiniLMEncoder

    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "run", torch_ensemble(), labels=built.labels, metrics={},
                           tokenizer_file=MiniLMEncoder.tokenizer_file())


@pytest.fixture(scope="module")
def jsonl(built, tmp_path_factory) -> Path:
    """Ten test and ten train rows (one each per label) of real PNG images, WAV clips and captions."""
    import cv2
    import soundfile

    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    lines = []
    for split in ("test", "train"):
        for i, label in enumerate(built.labels):
            name = f"{split}{i}"
            cv2.imwrite(str(folder / f"{name}.png"), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
            soundfile.write(folder / f"{name}.wav", (rng.standard_normal(8000) * 0.1).astype(np.float32), 16000)
            lines.append(json.dumps({"image": f"{name}.png", "audio": f"{name}.wav", "text": f"the digit {label}",
                                     "label": label, "split": split}))
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
    assert footprint["first_prediction_s"] > 0 and footprint["first_start"]["first_prediction_s"] > 0  # two starts
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
    (["--torch-compile"], "add --baseline torch-process"),
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


_QUICK = ["--iters", "3", "--warmup", "1", "--threads", "1", "--accuracy-samples", "4", "--no-members-compare",
          "--no-footprint"]


def test_torch_process_baseline_is_timed_in_its_own_process(built, checkpoint, jsonl, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", str(built.path), "--data", str(jsonl), "--batch", "1,2", *_QUICK,
                                      "--baseline", "torch-process", "--checkpoint", str(checkpoint),
                                      "--background-load", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert validate_report(report) == []
    torch_records = [c for c in report["configs"] if c["kind"] == "torch"]
    assert [c["id"] for c in torch_records] == ["torch/eager (own process)/b1", "torch/eager (own process)/b2"]
    for rec in torch_records:
        assert rec["pid"] != os.getpid() and rec["latency_ms"]["n"] == 3 and rec["latency_ms"]["p50"] > 0
        assert {"total", "encoder.image", "encoder.text"} <= set(rec["stages_ms"])
    assert "pid" not in next(c for c in report["configs"] if c["kind"] == "ensemble")
    ratios = {(c["name"], c["batch"]): c for c in report["comparisons"]}
    for batch in (1, 2):
        ratio = ratios[("runtime fp32/ort / PyTorch eager (own process)", batch)]
        assert ratio["denominator"] == f"torch/eager (own process)/b{batch}" and ratio["ratio_p50"] > 0
    assert report["accuracy"]["torch/eager"]["samples"] == 4
    assert report["environment"]["threads"]["torch"] == 1
    assert "PyTorch eager (own process)" in " ".join(result.output.split())
    fair = report["fairness"]  # both sides under the same rules, each side's threads recorded
    assert fair["blas_threads"] == 1 and fair["text_padding"]["runtime"]["text"] == 8 == \
        fair["text_padding"]["pytorch"]["text"]
    sides = fair["thread_settings"]
    assert sides["runtime"]["blas_threads"] == 1 == sides["pytorch (own process)"]["blas_threads"]
    assert sides["pytorch (own process)"]["torch_intra_op"] == 1 and sides["runtime"]["ort_intra_op"] == 1
    assert fair["disturbed"] == [c["id"] for c in report["configs"] if c["p90_over_p50"] > 1.3]
    loaded = report["background_load"]
    assert set(loaded["configs"]) == {"fp32/ort/b1", "fp32/ort/b2"} and loaded["workload"]["duty"] == 0.5
    for c in loaded["configs"].values():
        assert c["with"]["p50"] > 0 and c["without"]["p99"] >= c["without"]["p50"] and c["p99_ratio"] > 0
    assert "beside a numpy load, fp32/ort/b1" in result.output and "fair baseline: one BLAS thread" in result.output


def test_peers_compare_every_encoder_with_the_peer_recipe(built, checkpoint, jsonl, tmp_path, monkeypatch):
    import torch

    # Inductor needs minutes per encoder and shape on two cores; the variant is kept, compiled eagerly.
    monkeypatch.setattr(torch, "compile", lambda module, **_kw: module)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", str(built.path), "--data", str(jsonl), "--batch", "1,2", *_QUICK,
                                      "--accuracy-samples", "0", "--peers", "--peer-calib", "2", "--peer-eval", "8",
                                      "--checkpoint", str(checkpoint), "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert validate_report(report) == [] and validate_peers(report["peers"]) == []
    peers = report["peers"]
    assert peers["schema"] == "mmedge.peers/1" and set(peers["encoders"]) == {"image", "text", "audio"}
    for modality, enc in peers["encoders"].items():
        fidelity = enc["fidelity_vs_pytorch_fp32"]
        peer = "peer: Optimum CPU recipe" if modality == "text" else "peer: ORT quantize_static QDQ"
        openvino = {"mmedge fp32 (openvino)", "peer: OpenVINO fp32 ONNX", "peer: OpenVINO NNCF int8"} \
            if importlib.util.find_spec("openvino") else set()
        assert set(fidelity) == {"pytorch eager", "torch.compile", "mmedge fp32", peer} | openvino  # no int8 here
        assert all(-1 - 1e-6 <= f["min"] <= f["mean"] <= 1 + 1e-6 for f in fidelity.values())
        assert fidelity["mmedge fp32"]["min"] > 0.999
        assert fidelity.get("mmedge fp32 (openvino)", {"min": 1.0})["min"] > 0.999  # f32: as exact as ORT
        assert set(enc["batches"]) == {"1", "2"}
        for entry in enc["batches"].values():
            assert all(ms > 0 for ms in entry["median_ms"].values()) and entry["flops"] > 0
            assert entry["floor_ms_int8"] < entry["floor_ms_fp32"]
        ops = enc["op_ms_b1"][peer]  # the profiler's op types, largest first
        assert ops and all(ms >= 0 for ms in ops.values()) and list(ops.values()) == sorted(ops.values(), reverse=True)
    text = " ".join(result.output.split())
    assert "encoders vs peers" in text and "best peer" in text and "peer: Optimum CPU recipe" in text


def test_peers_table_names_the_best_peer_and_the_int8_ratio():
    from rich.console import Console

    from mmedge.cli.tables import peers_table

    medians = {"pytorch eager": 8.0, "torch.compile": 6.0, "mmedge fp32": 5.0, "mmedge int8": 3.0, "peer: X": 4.0}
    fidelity = {k: {"min": 0.99, "mean": 0.995} for k in medians}
    peers = {"threads": 2, "iters": 3, "warmup": 1, "encoders": {"image": {
        "encoder": "enc", "fidelity_vs_pytorch_fp32": fidelity, "batches": {"1": {"median_ms": medians}}}}}
    console = Console(width=200, record=True)
    console.print(peers_table(peers))
    lines = console.export_text().splitlines()
    best = next(line for line in lines if "│ peer: X" in line)
    int8 = next(line for line in lines if "│ mmedge int8" in line)
    assert "best peer" in best and "1.00" in best
    assert "0.75" in int8 and "mmedge int8 vs best peer (peer: X)" in int8


def test_a_variant_whose_outputs_fall_below_int8s_bar_is_not_counted():
    """OpenVINO's NNCF int8 text encoder at bf16: fastest, at min cosine 0.37 to PyTorch (benchmarks/peers.json);
    mmedge's own int8 graphs on OpenVINO saturate on x86 without VNNI (min cosine 0.94)."""
    from mmedge.bench.peers import best_peer, fastest_mmedge, peer_min_cosine

    medians = {"mmedge int8": 4.5, "peer: OpenVINO NNCF int8": 2.75, "peer: OpenVINO fp32 ONNX": 3.1}
    fidelity = {"mmedge int8": {"min": 0.9955}, "peer: OpenVINO NNCF int8": {"min": 0.367},
                "peer: OpenVINO fp32 ONNX": {"min": 0.99998}}
    assert best_peer(medians) == "peer: OpenVINO NNCF int8"  # speed alone
    assert best_peer(medians, fidelity) == "peer: OpenVINO fp32 ONNX" and peer_min_cosine() == 0.95
    assert best_peer({"mmedge int8": 1.0, "peer: X": 2.0}, {"peer: X": {"min": 0.5}}) is None
    ours = {"mmedge int8 (openvino)": 1.0, "mmedge fp32": 2.0}
    assert fastest_mmedge(ours) == "mmedge int8 (openvino)"
    assert fastest_mmedge(ours, {"mmedge int8 (openvino)": {"min": 0.94}}) == "mmedge fp32"  # saturated: not shipped


@pytest.mark.parametrize("flags, needed_by", [(["--peers"], "--peers"),
                                              (["--baseline", "torch-process"], "--baseline torch-process")])
def test_peers_and_own_process_baseline_without_checkpoint_are_typed_errors(built, jsonl, flags, needed_by):
    result = CliRunner().invoke(app, ["bench", str(built.path), "--data", str(jsonl), *flags, "--iters", "1",
                                      "--warmup", "0", "--accuracy-samples", "0", "--no-members-compare"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert text.startswith("error:") and f"{needed_by} needs the PyTorch checkpoint" in text
    assert "pass --checkpoint PATH" in text and "Traceback" not in text


def test_baseline_and_runtime_encode_token_tensors_of_the_same_length(built, checkpoint, jsonl):
    """The fair-baseline rule: the PyTorch baseline pads text as the runtime does, row for row."""
    from mmedge.bench import fairness
    from mmedge.bench.context import load_test_split
    from mmedge.bench.options import BenchOptions
    from mmedge.evaluation import TorchReference, raw_inputs
    from mmedge.runtime import Bundle, Session

    padding = fairness.runtime_padding(BenchOptions(bundle=built.path, data=str(jsonl)))
    assert padding["text"] > 0  # the fixture's text graph takes any token count: the runtime buckets
    ref = TorchReference.from_checkpoint(checkpoint, threads=1, length_bucket=padding["text"])
    seen: list[tuple[int, ...]] = []
    ref.model.encoders["text"].register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    with Bundle.open(built.path) as bundle:
        data = load_test_split(bundle, str(jsonl))[0]
    max_length = built.manifest["inputs"]["text"]["max_length"]
    with Session(built.path, threads=1, text_cache_size=0) as session:
        for rows in ([0], [0, 3, 7], list(range(len(data)))):
            ref.predict(data, rows)
            runtime = session.encode_texts(raw_inputs(data, rows, ["text"])["text"])
            assert seen[-1] == runtime["text_mask"].shape == (len(rows), runtime["text_mask"].shape[1])
            assert seen[-1][1] < max_length  # short captions: not padded to the spec's full length
