"""`mmedge export` end to end on a small real checkpoint: bundle, parity, QDQ, accuracy, errors."""
import dataclasses
import hashlib
import json
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from mmedge.cli import app
from mmedge.config import MemberConfig, get_recipe
from mmedge.runtime.ensemble import EnsembleMethod
from mmedge.errors import CalibrationError, CheckpointError
from mmedge.export.exporter import ExportConfig, export_checkpoint
from mmedge.training import train_recipe

pytestmark = pytest.mark.slow
FAST = dict(calib_samples=24, eval_samples=48)
# The tiny checkpoint's accuracy on 48 rows is noisy: no fallback here, so every precision's
# graphs are the quantized ones whose structure the tests check (the revert order is tested alone).
STRUCTURE = dict(FAST, max_drop=100.0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    base = get_recipe("digits-av")
    recipe = base.replace(
        subset=240, baselines=False,
        members=(MemberConfig("concat", "concat", base.modalities),
                 MemberConfig("cross_attention", "cross_attention", base.modalities, hidden=32, seed=2)),
        train=dataclasses.replace(base.train, epochs=6, encoder_epochs=2),
        ensemble=EnsembleMethod.STACKING,  # both heads are exported (selection may drop one of a tiny run's)
    )
    out = tmp_path_factory.mktemp("ckpt") / "small"
    train_recipe(recipe, out)
    return out


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "small"
    manifest = export_checkpoint(checkpoint, out, config=ExportConfig(**STRUCTURE))
    return out, manifest


def test_manifest_schema_and_hashes(bundle):
    out, manifest = bundle
    on_disk = json.loads((out / "manifest.json").read_text())
    for key in ("format", "task", "labels", "inputs", "encoders", "members", "ensemble", "metrics", "versions",
                "precisions", "parity" if "parity" in on_disk else "calibration"):
        assert key in on_disk
    assert on_disk["format"] == "mmedge.bundle/1"
    assert set(on_disk["encoders"]) == {"image", "text", "audio"}
    assert [m["name"] for m in on_disk["members"]] == ["concat", "cross_attention"]
    for rel, digest in on_disk["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest
    assert on_disk["versions"]["opset"] >= 17
    assert not any(p.name.startswith(".small") for p in out.parent.iterdir())  # no temp folders left


def test_fp32_parity_recorded_for_every_component(bundle):
    _, manifest = bundle
    graphs = [e["graphs"]["fp32"] for e in manifest["encoders"].values()] + [m["graphs"]["fp32"] for m in manifest["members"]]
    for g in graphs:
        assert g["parity"]["ok"] and g["parity"]["max_abs_diff"] <= 1e-4
        batches = {c.split("[")[1].split("x")[0] for c in g["parity"]["cases"]}
        assert {"1", "2", "7"} <= batches
    text_cases = manifest["encoders"]["text"]["graphs"]["fp32"]["parity"]["cases"]
    assert len({c for c in text_cases if "input_ids[7x" in c}) == 2  # two token lengths


def test_graphs_are_valid_onnx_with_dynamic_batch(bundle):
    out, manifest = bundle
    for enc in manifest["encoders"].values():
        model = onnx.load(str(out / enc["graphs"]["fp32"]["file"]))
        onnx.checker.check_model(model)
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch


def test_int8_trt_graphs_are_signed_symmetric(bundle):
    out, manifest = bundle
    entries = [e["graphs"]["int8-trt"] for e in manifest["encoders"].values()] + [m["graphs"]["int8-trt"] for m in manifest["members"]]
    checked = 0
    for entry in entries:
        if "kept_float" in entry:
            continue
        model = onnx.load(str(out / entry["file"]))
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "QuantizeLinear":
                zp = inits[node.input[2]]
                assert zp.dtype == np.int8 and not zp.any(), node.name
                checked += 1
    assert checked > 0


def test_cnn_encoders_keep_the_bias_correction_closer_to_fp32(bundle):
    _, manifest = bundle
    for modality in ("image", "audio"):  # CNNs: quantized with and without NNCF's bias correction
        depthwise = manifest["encoders"][modality]["graphs"]["fp32"]["graph"]["depthwise_convs"] > 0
        kind = "full" if depthwise else "fast"  # full for depthwise CNNs (nncf_ptq.DEPTHWISE_RANGES)
        for precision in ("int8", "int8-trt"):
            choice = manifest["encoders"][modality]["graphs"][precision]["quantization"]["bias_correction"]
            assert choice.split()[0] in (kind, "off") and "without" in choice and kind in choice, choice
    assert "bias_correction" not in manifest["encoders"]["text"]["graphs"]["int8"]["quantization"]


def test_cpu_int8_activations_are_unsigned(bundle):
    out, manifest = bundle
    entries = [e["graphs"]["int8"] for e in manifest["encoders"].values()] + [m["graphs"]["int8"] for m in manifest["members"]]
    zps = []
    for entry in (e for e in entries if "kept_float" not in e):
        model = onnx.load(str(out / entry["file"]))
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        zps += [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[2] in inits]
    assert zps and all(z.dtype == np.uint8 for z in zps)


def test_every_precision_has_an_accuracy_report(bundle):
    _, manifest = bundle
    metrics = manifest["metrics"]
    assert metrics["samples"] == FAST["eval_samples"]
    for p in ("fp32", "fp16", "int8", "int8-trt"):
        r = metrics[p]
        assert set(r["members"]) == {"concat", "cross_attention"}
        assert manifest["precisions"][p] == "ok" or manifest["precisions"][p].startswith("failed:")
    assert metrics["fp32"]["agreement_with_pytorch"] == 1.0
    validation = metrics["validation"]  # from the checkpoint's metrics.json: the bench's member choice
    assert set(validation["members"]) == {"concat", "cross_attention"} and validation["samples"] > 0
    assert abs(metrics["fp32"]["ensemble"] - metrics["pytorch"]["ensemble"]) < 1e-9


def test_int8_files_are_much_smaller(bundle):
    out, manifest = bundle
    size = {p: sum((out / e["graphs"][p]["file"]).stat().st_size for e in manifest["encoders"].values()) for p in ("fp32", "int8")}
    assert size["int8"] <= 0.35 * size["fp32"]


def test_fallback_keeps_heads_then_least_faithful_encoders_in_float():
    from mmedge.export.accuracy_control import control_accuracy
    from mmedge.export.components import Component, keep_fp32
    from mmedge.runtime.manifest import GraphEntry

    def comp(key, kind, cos):
        c = Component(key, key, None, kind, "cnn")
        c.graphs["fp32"] = GraphEntry(file=f"{key}.fp32.onnx")
        c.graphs["int8"] = GraphEntry(file=f"{key}.int8.onnx", fidelity={"min_cosine": cos})
        return c

    comps = [comp("encoder.image", "encoder", 0.99), comp("encoder.text", "encoder", 0.95),
             comp("head.a", "head", 0.9), comp("head.b", "head", 0.999)]
    report = control_accuracy(comps, "int8", evaluate=lambda: ({"ensemble": 0.5}, 5.0), max_drop=1.0,
                              revert=lambda c: keep_fp32(c, "int8", "test"))
    plan = [list(step.components) for step in report.steps]
    assert plan == [["head.a", "head.b"], ["encoder.text"], ["encoder.image"]]
    assert report.all_reference and not report.within_budget


def test_inspect_prints_components(bundle):
    out, _ = bundle
    result = CliRunner().invoke(app, ["inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert "encoder.image" in result.output and "int8-trt" in result.output


def test_bad_checkpoint_path(tmp_path):
    result = CliRunner().invoke(app, ["export", str(tmp_path / "missing"), "-o", str(tmp_path / "b")])
    assert result.exit_code == 2
    assert "does not exist" in result.output and not (tmp_path / "b").exists()


def test_checkpoint_of_another_format_version(checkpoint, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    meta = json.loads((checkpoint / "recipe.json").read_text())
    (old / "recipe.json").write_text(json.dumps({**meta, "format": "mmedge.checkpoint/0"}))
    (old / "weights.pt").write_bytes((checkpoint / "weights.pt").read_bytes())
    with pytest.raises(CheckpointError, match="mmedge.checkpoint/0"):
        export_checkpoint(old, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_calibration_missing_a_modality(checkpoint, tmp_path):
    import cv2

    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((16, 16, 3), 40 * i, np.uint8))
    with pytest.raises(CalibrationError, match="has no \\['text', 'audio'\\] samples"):
        export_checkpoint(checkpoint, tmp_path / "b", config=ExportConfig(calib=folder, **FAST))
    assert not (tmp_path / "b").exists()


def test_calibration_row_with_missing_file(checkpoint, tmp_path):
    jl = tmp_path / "c.jsonl"
    jl.write_text(json.dumps({"image": "nope.png", "text": "x", "audio": "a.wav"}) + "\n")
    with pytest.raises(CalibrationError, match="c.jsonl:1: image file .*nope.png not found"):
        export_checkpoint(checkpoint, tmp_path / "b", config=ExportConfig(calib=jl, **FAST))


def test_killed_export_leaves_nothing_under_the_output_name(checkpoint, tmp_path):
    out = tmp_path / "killed"
    code = (f"from mmedge.export.exporter import export_checkpoint, ExportConfig; "
            f"export_checkpoint({str(checkpoint)!r}, {str(out)!r}, config=ExportConfig(calib_samples=24, eval_samples=48))")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".killed.work-*/encoders/*.onnx")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".killed.work-*")), "the export never started writing"
    assert not out.exists()


def test_runtime_reproduces_the_export_report(bundle, checkpoint):
    """The runtime on the held-out rows gives exactly the accuracy the export recorded."""
    from mmedge.checkpoint import read_checkpoint_meta
    from mmedge.config import Recipe
    from mmedge.evaluation import evaluate_bundle
    from mmedge.training import load_recipe_data

    out, manifest = bundle
    recipe = Recipe.from_dict(read_checkpoint_meta(checkpoint)["recipe"])
    data = load_recipe_data(recipe)
    rows = np.asarray(data.splits["test"])[: FAST["eval_samples"]]
    for precision, status in manifest["precisions"].items():
        if status == "ok":
            got = evaluate_bundle(out, precision, data, rows)
            assert got["ensemble"] == manifest["metrics"][precision]["ensemble"]
            assert got["members"] == manifest["metrics"][precision]["members"]


@pytest.mark.parametrize("bad", [dict(precisions=("int4",)), dict(eval_samples=0), dict(max_drop=-1.0)])
def test_bad_export_settings_are_errors(bad):
    from mmedge.errors import ConfigError

    with pytest.raises(ConfigError):
        ExportConfig(**bad)


class _ZeroedWeights:
    """A real (if useless) precision: the fp32 graph with every weight matrix of the chosen
    component kinds set to zero, so their outputs no longer depend on the input. Registered
    for one test, it makes the accuracy-aware fallback run end to end with a known outcome."""

    needs_calibration = False

    def __init__(self, name, model_types):
        self.name, self.model_types = name, model_types

    def build(self, src, dst, *, calib=(), model_type="cnn"):
        model = onnx.load(str(src))
        if model_type in self.model_types:
            for init in model.graph.initializer:
                w = onnx.numpy_helper.to_array(init)
                if w.dtype == np.float32 and w.ndim >= 2:
                    init.CopyFrom(onnx.numpy_helper.from_array(np.zeros_like(w), init.name))
        onnx.save(model, str(dst))
        return {"tool": "test: zeroed weight matrices", "model_types": list(self.model_types)}


def test_accuracy_fallback_runs_end_to_end(checkpoint, tmp_path, monkeypatch):
    """Heads zeroed: the first fallback step (heads kept fp32) restores fp32 accuracy exactly.
    Everything zeroed: every step runs, every component ends in fp32, the precision fails."""
    from mmedge.export.quantization import POLICIES

    from mmedge.runtime.precisions import PRECISIONS, Precision

    for name, kinds in (("zeroed-heads", ("head",)), ("zeroed-all", ("cnn", "transformer", "head"))):
        monkeypatch.setitem(PRECISIONS._items, name, Precision(name, "test: zeroed weight matrices"))
        monkeypatch.setitem(POLICIES._items, name, _ZeroedWeights(name, kinds))
    manifest = export_checkpoint(checkpoint, tmp_path / "b", config=ExportConfig(
        precisions=("fp32", "zeroed-heads", "zeroed-all"), max_drop=0.0, **FAST))
    metrics, status = manifest["metrics"], manifest["precisions"]
    kept = [s.split(":")[0] for s in metrics["zeroed-heads"]["accuracy_reverts"]]
    assert kept == ["kept head.concat, head.cross_attention in fp32"]
    assert status["zeroed-heads"] == "ok"
    assert metrics["zeroed-heads"]["ensemble"] == metrics["fp32"]["ensemble"]
    heads = [m["graphs"]["zeroed-heads"] for m in manifest["members"]]
    assert all(g["file"].endswith(".fp32.onnx") and "kept_float" in g for g in heads)
    assert all("kept_float" not in e["graphs"]["zeroed-heads"] for e in manifest["encoders"].values())
    steps = metrics["zeroed-all"]["accuracy_reverts"]
    assert steps[0].split(":")[0] == "kept head.concat, head.cross_attention in fp32" and len(steps) >= 2  # heads, then encoders
    floats = [e["graphs"]["zeroed-all"] for e in manifest["encoders"].values()]
    if len(steps) == 1 + len(manifest["encoders"]):  # every encoder had to go back to fp32
        assert status["zeroed-all"].startswith("failed: every component had to stay fp32")
        assert all("kept_float" in g for g in floats)
    else:  # the restored encoders were enough to match fp32 exactly on these rows
        assert status["zeroed-all"] == "ok" and metrics["zeroed-all"]["drop_points"] <= 0.0


def test_mixed_takes_each_components_fastest_graph_within_the_budget(bundle):
    """Issue 18 item 5: candidates are each graph on ONNX Runtime and, where export checked it there, on
    the other CPU backends (OpenVINO when installed); a Session under auto runs each graph where chosen."""
    from mmedge.export.backend_check import checked_backends
    from mmedge.export.mixed_precision import fastest, mixed_candidates, split_key
    from mmedge.runtime import Session

    out, manifest = bundle
    entries = {f"encoder.{m}": e["graphs"] for m, e in manifest["encoders"].items()}
    entries.update({f"head.{m['name']}": m["graphs"] for m in manifest["members"]})
    chosen = manifest["metrics"]["mixed"]["components"]
    assert set(chosen) == set(entries) and manifest["precisions"]["mixed"] == "ok"  # max_drop 100: no step back
    others = {b.name for b in checked_backends()}
    for key, graphs in entries.items():
        mixed, timed = graphs["mixed"], graphs["mixed"]["latency_ms_batch1"]
        assert chosen[key] == fastest(mixed["latency_ms_per_row"]) and timed == mixed["latency_ms_per_row"]["1"]
        assert split_key(chosen[key]) == (mixed["chosen"], mixed.get("backend"))
        assert set(mixed["latency_ms_per_row"]) == {"1", "7"}  # the parity cases' batch 1 and largest batch
        assert mixed["file"] == graphs[mixed["chosen"]]["file"]  # the chosen graph itself, not a copy
        assert {split_key(k)[0] for k in timed} <= set(mixed_candidates()) and "fp32" in timed
        for k in timed:  # another backend's candidate only for graphs export checked there
            precision, backend = split_key(k)
            assert backend is None or (backend in others and graphs[precision]["backends"][backend]["ok"])
        assert others or all("@" not in k for k in timed)
    assert manifest["metrics"]["mixed"]["measured_on"].startswith("mmedge.runtime")
    with Session(out, precision="mixed", threads=1) as session:
        assert session.precision == "mixed" and session.backend == "ort"
        placed = {k: session.backends[k] for k in entries if k in session.backends}
        assert placed == {k: entries[k]["mixed"].get("backend") or "ort" for k in placed}


def test_each_precision_has_one_merged_heads_graph_of_its_own_head_graphs(bundle):
    """Issue 19 item 4: the heads of each precision (mixed: the chosen ones) and the rule as one graph, Q/DQ kept."""
    from mmedge.export.heads_graph import MERGED_ATOL

    out, manifest = bundle
    graphs = manifest["ensemble"]["graphs"]
    assert set(graphs) == {p for p, s in manifest["precisions"].items() if s == "ok"}
    for precision, entry in graphs.items():
        heads = {m["name"]: m["graphs"][precision]["file"] for m in manifest["members"]}
        assert entry["quantization"]["composed_from"] == heads and entry["parity"]["max_abs_diff"] <= MERGED_ATOL
        merged = onnx.load(str(out / entry["file"]))
        qdq = sum(n.op_type == "QuantizeLinear" for f in heads.values() for n in onnx.load(str(out / f)).graph.node)
        assert sum(n.op_type == "QuantizeLinear" for n in merged.graph.node) == qdq
    assert any(sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(out / graphs[p]["file"])).graph.node)
               for p in ("int8", "int8-trt") if p in graphs)
