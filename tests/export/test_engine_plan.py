"""What ``mmedge build`` decides before TensorRT runs, on the real fixture bundle: optimization
profiles from the manifest (checked by running the graphs at those shapes on ONNX Runtime), the
precisions it builds and the graph each engine comes from, which engines are up to date, the
workspace, the settings; and the command's exit without TensorRT."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmedge.errors import BundleError, ConfigError
from mmedge.export.engine_config import (BuildConfig, plan_jobs, select_precisions, stale_reason,
                                         workspace_bytes)
from mmedge.export.engine_profiles import component_profiles, profiles_to_dict
from mmedge.runtime import Bundle
from mmedge.runtime.backends.ort import create_session
from mmedge.runtime.backends.trt_engines import BuildRecord, DeviceIdentity, write_engine

HERE = DeviceIdentity("10.3.0", "Orin", "8.7", "36.3.0")
MIB = 1 << 20


@pytest.fixture(scope="module")
def profiles(bundle_path):
    with Bundle.open(bundle_path) as bundle:
        return component_profiles(bundle, max_batch=8, opt_batch=2)


def _copy(src: Path, dst: Path) -> Path:
    """A bundle copy by hard links (the bundle reader refuses symlinks that lead out), with its own
    manifest.json to edit."""
    shutil.copytree(src, dst, copy_function=os.link)
    (dst / "manifest.json").unlink()
    shutil.copyfile(src / "manifest.json", dst / "manifest.json")
    return dst


@pytest.fixture(scope="module")
def multi(bundle_path, tmp_path_factory, tools):
    """The fixture bundle with fp16 / int8-trt / int8 declared: fp16's concat head is its own file (a
    copy), every other entry points at the fp32 graph (as a component kept in float does)."""
    folder = _copy(bundle_path, tmp_path_factory.mktemp("multi") / "b")
    shutil.copyfile(bundle_path / "heads/concat.fp32.onnx", folder / "heads/concat.fp16.onnx")

    def edit(m):
        for precision in ("fp16", "int8-trt", "int8"):
            m["precisions"][precision] = "ok"
            for owner in [*m["encoders"].values(), *m["members"]]:
                owner["graphs"][precision] = dict(owner["graphs"]["fp32"])
        concat = next(mb for mb in m["members"] if mb["name"] == "concat")
        concat["graphs"]["fp16"]["file"] = m["files"]["heads/concat.fp16.onnx"] = "heads/concat.fp16.onnx"
        m["files"]["heads/concat.fp16.onnx"] = concat["graphs"]["fp16"]["sha256"]

    tools.edit_manifest(folder, edit)
    return folder


def test_encoder_profiles_come_from_the_manifest(profiles, built):
    image = profiles["encoder.image"][0]
    assert (image.name, image.min, image.opt, image.max) == ("pixel_values", (1, 3, 64, 64), (2, 3, 64, 64),
                                                             (8, 3, 64, 64))
    length = built.text_spec.max_length
    for p in profiles["encoder.text"]:  # input_ids, attention_mask: tokens 1..max_length, tuned at max_length
        assert (p.min, p.opt, p.max) == ((1, 1), (2, length), (8, length))
    (mel,) = profiles["encoder.audio"]
    frames = built.audio_spec.n_frames
    assert (mel.min, mel.max) == ((1, 1, 64, frames), (8, 1, 64, frames))


def test_head_profiles_follow_the_encoders(profiles, built):
    concat = {p.name: p for p in profiles["head.concat"]}
    assert concat["image_pooled"].max == (8, 1280) and concat["text_pooled"].min == (1, 384)
    cross = {p.name: p for p in profiles["head.cross_attention"]}
    assert (cross["text_seq"].min, cross["text_seq"].max) == ((1, 1, 384), (8, built.text_spec.max_length, 384))
    steps = cross["audio_seq"].max[1]
    assert cross["audio_seq"].min == (1, steps, 128) and cross["audio_mask"].max == (8, steps) and steps > 1


def _zeros(session, shape_of) -> dict[str, np.ndarray]:
    types = {"tensor(float)": np.float32, "tensor(int64)": np.int64}
    return {i.name: np.ones(shape_of(i.name), types[i.type]) for i in session.get_inputs()}


@pytest.mark.parametrize("which", ["min", "opt", "max"])
def test_every_profile_shape_runs_and_encoders_feed_heads_exactly(bundle_path, profiles, which):
    """Each graph runs at its profile's shapes, and each encoder's outputs at its min/opt/max are
    exactly the head profile's min/opt/max: the ranges are what the runtime really sends."""
    with Bundle.open(bundle_path) as bundle:
        outputs = {}
        for component, shapes in profiles.items():
            by_name = {p.name: getattr(p, which) for p in shapes}
            session = create_session(bundle.graph_path(component, "fp32"), threads=1)
            names = [o.name for o in session.get_outputs()]
            result = dict(zip(names, session.run(names, _zeros(session, by_name.get))))
            if component.startswith("encoder."):
                outputs.update({k: v.shape for k, v in result.items()})
            else:
                assert all(outputs[n] == s for n, s in by_name.items()), component


def test_opt_batch_must_fit(bundle_path):
    with Bundle.open(bundle_path) as bundle, pytest.raises(ConfigError, match="opt batch"):
        component_profiles(bundle, max_batch=2, opt_batch=4)


@pytest.mark.parametrize("requested, expected", [
    (("best",), ("fp16",)), (("fp32", "int8-trt"), ("fp32", "int8-trt")), (("fp16", "fp16"), ("fp16",))])
def test_select_precisions(multi, requested, expected):
    with Bundle.open(multi) as bundle:
        assert select_precisions(bundle, requested) == expected


@pytest.mark.parametrize("requested, error, match", [
    (("int8",), ConfigError, "does not build int8, the ONNX Runtime CPU graph.*int8-fp16-trt, fp16, int8-trt or fp32"),
    (("bf16",), ConfigError, "cannot build precision 'bf16'"),
    (("best", "fp16"), ConfigError, "do not combine"),
    (("int8-fp16-trt",), BundleError, "'int8-fp16-trt' is not in the bundle"),
])
def test_select_precisions_refuses(multi, requested, error, match):
    with Bundle.open(multi) as bundle, pytest.raises(error, match=match):
        select_precisions(bundle, requested)


def test_best_without_any_tensorrt_precision(bundle_path, tmp_path, tools):
    folder = _copy(bundle_path, tmp_path / "b")
    tools.edit_manifest(folder, lambda m: m["precisions"].update(fp32="failed: test"))
    with Bundle.open(folder) as bundle, pytest.raises(BundleError, match="has none of"):
        select_precisions(bundle, ("best",))


def test_plan_builds_each_precision_from_its_own_graph_once(multi, tmp_path):
    with Bundle.open(multi) as bundle:
        profiles = component_profiles(bundle, max_batch=4)
        jobs = plan_jobs(bundle, ("fp32", "fp16", "int8-trt"), root=tmp_path, here=HERE, profiles=profiles)
        sources = {(j.component, j.source_rel): j.precisions for j in jobs}
        assert sources[("head.concat", "heads/concat.fp16.onnx")] == ("fp16",)
        assert sources[("head.concat", "heads/concat.fp32.onnx")] == ("fp32", "int8-trt")
        assert sources[("encoder.image", "encoders/image.fp32.onnx")] == ("fp32", "fp16", "int8-trt")
        assert len(jobs) == 6 and all(j.stale == "not built yet" for j in jobs)
        fp16_head = next(j for j in jobs if j.source_rel == "heads/concat.fp16.onnx")
        assert fp16_head.engine == tmp_path / HERE.key / "heads/concat.fp16.engine"
        assert fp16_head.source == bundle.graph_path("head.concat", "fp16")
        assert fp16_head.source_sha256 == bundle.graph_entry("head.concat", "fp16").sha256
        only = plan_jobs(bundle, ("fp16",), root=tmp_path, here=HERE, profiles=profiles, components=["head.concat"])
        assert [j.source_rel for j in only] == ["heads/concat.fp16.onnx"]


def _record_for(job, device=HERE) -> BuildRecord:
    return BuildRecord(device, job.component, job.precisions[0], job.source_rel, job.source_sha256,
                       profiles_to_dict(job.profiles), 3, 1.0, 1 << 28, 3)


def test_up_to_date_engines_are_kept_and_stale_ones_say_why(multi, tmp_path):
    with Bundle.open(multi) as bundle:
        profiles = component_profiles(bundle, max_batch=4)
        job = plan_jobs(bundle, ("fp16",), root=tmp_path, here=HERE, profiles=profiles, components=["head.concat"])[0]
        write_engine(job.engine, b"eng", _record_for(job))  # placeholder bytes: only the record is read
        plan = dict(bundle=bundle, precisions=("fp16",), root=tmp_path, here=HERE, components=["head.concat"])
        assert plan_jobs(profiles=profiles, **plan)[0].stale is None
        assert plan_jobs(profiles=profiles, force=True, **plan)[0].stale == "--force"
        wider = component_profiles(bundle, max_batch=16)
        assert "optimization profiles changed" in plan_jobs(profiles=wider, **plan)[0].stale
        assert plan_jobs(profiles=wider, check_profiles=False, **plan)[0].stale is None  # auto_build keeps it
        newer = DeviceIdentity("10.3.0", "Orin", "8.7", "36.4.0")
        assert "l4t: engine built for '36.3.0', this device has '36.4.0'" in stale_reason(
            job.engine, newer, job.source_sha256, job.profiles)
        assert "re-exported" in stale_reason(job.engine, HERE, "00" * 32, job.profiles)


@pytest.mark.parametrize("requested, free, shared, expected", [
    (None, 16 << 30, False, 4 << 30), (None, 2 << 30, False, 1 << 30), (None, 2 << 30, True, 512 * MIB),
    (256, 2 << 30, True, 256 * MIB)])
def test_workspace_sizing(requested, free, shared, expected):
    assert workspace_bytes(requested, free_bytes=free, shared_memory=shared) == expected


def test_workspace_refusals():
    with pytest.raises(ConfigError, match="more than the 512 MiB of device memory free"):
        workspace_bytes(1024, free_bytes=512 * MIB, shared_memory=False)
    with pytest.raises(ConfigError, match="only 100 MiB of device memory is free"):
        workspace_bytes(None, free_bytes=100 * MIB, shared_memory=True)


@pytest.mark.parametrize("bad, match", [
    (dict(max_batch=0), "--max-batch"), (dict(opt_batch=9), "opt batch"), (dict(opt_level=6), "--opt-level"),
    (dict(workspace_mb=8), "--workspace"), (dict(precisions=()), "at least one precision")])
def test_build_config_validation(bad, match):
    with pytest.raises(ConfigError, match=match):
        BuildConfig(**bad)


def test_mmedge_build_without_tensorrt_says_what_is_missing(bundle_path):
    from mmedge.cli import app
    from mmedge.runtime.backends.trt import EngineLoader

    if EngineLoader.availability() is None:
        pytest.skip("TensorRT and a GPU are here: tests/e2e/test_tensorrt_gpu.py builds for real")
    result = CliRunner().invoke(app, ["build", str(bundle_path), "--precision", "fp32"])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    for part in ("needs TensorRT, cuda-python and an NVIDIA GPU", EngineLoader.availability(),
                 "pip install 'mmedge[tensorrt-cu12]'", "'mmedge[tensorrt-cu13]'", "driver R580",
                 f"mmedge run {bundle_path}", "ONNX Runtime", "Session"):
        assert part in message, part
    bad = CliRunner().invoke(app, ["build", str(bundle_path), "--opt-level", "9"])
    assert bad.exit_code == 2 and "--opt-level must be 0..5" in bad.output


def test_builder_imports_without_torch_or_onnx():
    """A Jetson has mmedge[tensorrt] but neither torch nor onnx: the builder must not need them."""
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'onnx', 'nncf', 'onnxscript'):\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import mmedge.export.engine_build, mmedge.cli.build, mmedge.runtime\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
