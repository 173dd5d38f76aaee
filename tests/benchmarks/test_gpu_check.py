"""``benchmarks/gpu_check.sh`` on a machine without a GPU (issue 20 items 7-9): run from another folder,
every part is skipped with its reason and the exit status is 0; a part that ran and failed makes it
non-zero; the check never builds into the bundle's own engine folder; the GPU tests skip, saying
why, where the export extras are missing.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402  (benchmarks/gpu_check.py)
from gpu_parts import PARTS, Context, PartSkipped, _against_cpu, main, run_parts  # noqa: E402

from mmedge.runtime.backends.trt import EngineLoader  # noqa: E402

CUDA_PYTHON_12 = Path.home() / ".cache" / "mmedge" / "cuda-python" / "cu12"  # test_trt_cuda.py installs it


def _no_gpu() -> bool:
    return EngineLoader.availability() is not None and not Path("/dev/nvidiactl").exists()


@pytest.mark.skipif(not _no_gpu(), reason="a GPU is here: gpu_check.sh runs its parts for real")
@pytest.mark.parametrize("with_cuda_python", [False, True])
def test_without_a_gpu_every_part_is_skipped_with_its_reason(tmp_path, with_cuda_python):
    if with_cuda_python and not (CUDA_PYTHON_12 / "cuda").is_dir():
        pytest.skip("cuda-python 12 is installed into its cache by tests/runtime/test_trt_cuda.py; run that first")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "WORK": "work"}  # relative: taken from the folder it runs in
    if with_cuda_python:
        env["PYTHONPATH"] = os.pathsep.join([str(CUDA_PYTHON_12), env.get("PYTHONPATH", "")])
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("[")]
    assert [line[1:12].strip() for line in lines] == list(PARTS)
    for line in lines:
        assert "] skipped: " in line and len(line.split("skipped: ", 1)[1]) > 20, line
    assert "gpu_check: 0 ran, 5 skipped, 0 failed" in out.stdout
    if with_cuda_python:
        assert "cudaErrorInsufficientDriver" in lines[0] and "no NVIDIA GPU is visible" not in lines[0]
    else:
        assert "cuda-python is not installed" in lines[0]
    assert (elsewhere / "work").is_dir() and not (elsewhere / "work" / "bundle").exists()  # no bundle made for nothing


def test_a_part_that_ran_and_failed_makes_the_exit_status_non_zero(tmp_path, capsys):
    def boom(ctx: Context) -> str:
        raise RuntimeError("the engine disagreed")

    def skip(ctx: Context) -> str:
        raise PartSkipped("no GPU here")

    parts = {"fine": lambda ctx: "ok", "skip": skip, "boom": boom}
    assert main(["--work", str(tmp_path)], parts) == 1
    assert main(["--work", str(tmp_path)], {"fine": parts["fine"], "skip": skip}) == 0
    results = run_parts(Context(tmp_path), parts)
    assert results == {"fine": ("ran", "ok"), "skip": ("skipped", "no GPU here"),
                       "boom": ("failed", "RuntimeError: the engine disagreed")}
    assert "[boom       ] FAILED: RuntimeError" in capsys.readouterr().out


def test_a_given_bundle_that_is_not_there_is_a_skip_reason(tmp_path):
    with pytest.raises(PartSkipped, match="no bundle at"):
        Context(tmp_path, tmp_path / "missing").bundle()


def test_a_bundle_that_could_not_be_made_fails_the_parts_that_need_it(tmp_path):
    """A broken train/export is a failure (exit 1), not a skip; it is tried once, not once per part."""
    ctx = Context(tmp_path)
    ctx._bundle_problem, ctx._bundle_failed = "making a bundle failed (mmedge export): boom", True
    results = run_parts(ctx, {"a": lambda c: str(c.bundle()), "b": lambda c: str(c.bundle())})
    assert results == {"a": ("failed", "RuntimeError: making a bundle failed (mmedge export): boom"),
                       "b": ("failed", "RuntimeError: making a bundle failed (mmedge export): boom")}


def test_the_comparison_against_cpu_runs(bundle_path, tmp_path):
    """The GPU parts' comparison, on the one backend this machine has (the same code, strict)."""
    assert "max |probability difference| vs CPU 0" in _against_cpu(Context(tmp_path, bundle_path), "ort")


def test_gpu_check_never_builds_into_the_bundles_own_engines(bundle_path):
    from mmedge.runtime import Bundle

    with Bundle.open(bundle_path) as bundle:
        with pytest.raises(SystemExit, match="bundle's own engine folder"):
            gpu_check.check_engine_dir(bundle, bundle_path / "engines")
        assert gpu_check.check_engine_dir(bundle, gpu_check.DEFAULT_ENGINES) == gpu_check.DEFAULT_ENGINES
    assert bundle_path not in gpu_check.DEFAULT_ENGINES.parents
    assert gpu_check._args([str(bundle_path)]).engine_dir == gpu_check.DEFAULT_ENGINES


def test_gpu_tests_skip_with_the_reason_without_the_export_extras():
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from test_tensorrt_gpu import EXPORT_MODULES, export_extras_problem

    assert export_extras_problem() is None  # this machine has them
    problem = export_extras_problem((*EXPORT_MODULES, "no_such_export_module"))
    assert "no_such_export_module" in problem and "mmedge[export]" in problem
