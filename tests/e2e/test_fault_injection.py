"""Fault injection: ``mmedge train`` and ``mmedge export`` SIGKILLed at every file-system operation of
their writing step and at random moments of the whole run leave the complete previous checkpoint or
bundle, or the complete new one, never a half one; and a rerun succeeds (issue 11).

The crash points come from ``crash_points.py`` (it forks the real command at its writing step);
the random moments from killing the whole command. Tiny runs: ``--subset 40 --epochs 1`` and
``--precision fp32``.
"""
from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmedge.errors import MmedgeError

pytestmark = pytest.mark.slow
SHIM = Path(__file__).with_name("crash_points.py")
WHOLE_RUN_KILLS = 2


def _mmedge(args: list[str], *, shim: tuple[Path, str, Path] | None = None) -> subprocess.Popen:
    prefix = [str(SHIM), str(shim[0]), shim[1], "11", str(shim[2]), "--"] if shim else ["-m", "mmedge"]
    return subprocess.Popen([sys.executable, *prefix, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _run(args: list[str], **kw) -> None:
    proc = _mmedge(args, **kw)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def _train(out: Path, subset: int) -> list[str]:
    return ["train", "--subset", str(subset), "--epochs", "1", "-o", str(out)]


def _export(checkpoint: Path, out: Path) -> list[str]:
    return ["export", str(checkpoint), "-o", str(out), "--precision", "fp32", "--calib-samples", "8",
            "--eval-samples", "8"]


def _complete_checkpoint(path: Path) -> None:
    import torch

    from mmedge.checkpoint import read_checkpoint_meta

    read_checkpoint_meta(path)
    torch.load(path / "weights.pt", map_location="cpu", weights_only=True)


def _complete_bundle(path: Path) -> None:
    from mmedge.runtime import Bundle

    Bundle.open(path).close()


def _check_crash_log(log: Path, target: Path, complete) -> dict:
    """Every state after a kill is the previous target or the new one; the rerun left the new one."""
    import crash_points

    header, *runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert header["new"] is not None and header["new"] != header["previous"]
    assert header["operations"] >= 5, "the writing step made almost no file-system operations"
    for run in runs:
        if run["state"] is None and header["previous"] is not None and not _exchange_supported(target.parent):
            # two renames (no renameat2 here): the previous folder waits aside for recover_dir
            assert any(".old-" in name for name in run["leftovers"]), run
            continue
        assert run["state"] in (header["previous"], header["new"]), f"half-written target after {run}"
    assert crash_points.state(target) == header["new"]
    complete(target)
    leftovers = [p.name for p in target.parent.glob(f".{target.name}.*")]
    assert not leftovers, f"the rerun left {leftovers}"
    return {"crash_points": header["operations"], "kills": sum(not r["completed"] for r in runs)}


def _exchange_supported(folder: Path) -> bool:
    from mmedge import atomic

    a, b = folder / ".exchange-a", folder / ".exchange-b"
    a.mkdir(exist_ok=True)
    b.mkdir(exist_ok=True)
    try:
        return atomic._exchange(a, b)
    finally:
        a.rmdir()
        b.rmdir()


def _kill_whole_runs(args: list[str], target: Path, complete, rng: random.Random, seconds: float) -> int:
    """Kills the whole command at random moments; the target must stay complete each time."""
    for _ in range(WHOLE_RUN_KILLS):
        proc = _mmedge(args)
        time.sleep(rng.uniform(0.5, seconds))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        complete(target)
    return WHOLE_RUN_KILLS


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("previous") / "ck"
    _run(_train(out, 40))
    return out


@pytest.fixture(autouse=True)
def _import_shim(monkeypatch):
    monkeypatch.syspath_prepend(str(SHIM.parent))


def test_killed_train_leaves_a_complete_checkpoint(checkpoint, tmp_path):
    target = tmp_path / "ck"
    shutil.copytree(checkpoint, target)
    log = tmp_path / "crash.jsonl"
    _run(_train(target, 60), shim=(log, "checkpoint", target))
    figures = _check_crash_log(log, target, _complete_checkpoint)
    figures["random"] = _kill_whole_runs(_train(target, 60), target, _complete_checkpoint, random.Random(1), 8.0)
    assert figures["kills"] + figures["random"] >= 10, figures
    print("train", figures)


def test_killed_export_leaves_a_complete_bundle(checkpoint, bundle_path, tools, tmp_path):
    target = tools.clone(bundle_path, tmp_path / "bundle")  # the previous bundle
    log = tmp_path / "crash.jsonl"
    _run(_export(checkpoint, target), shim=(log, "bundle", target))
    figures = _check_crash_log(log, target, _complete_bundle)
    figures["random"] = _kill_whole_runs(_export(checkpoint, target), target, _complete_bundle, random.Random(2), 12.0)
    assert figures["kills"] + figures["random"] >= 10, figures
    print("export", figures)


def test_complete_checks_catch_a_half_target(tmp_path):
    half = tmp_path / "ck"
    half.mkdir()
    (half / "recipe.json").write_text("{}")
    with pytest.raises(MmedgeError):
        _complete_checkpoint(half)
    with pytest.raises(MmedgeError):
        _complete_bundle(half)
