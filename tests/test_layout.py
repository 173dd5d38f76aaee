"""The layout rules of docs/architecture.md, checked: one room per idea, no name twice, small files,
every command reachable whichever way the CLI is started."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("mmedge", "export", "runtime", "benchmarks", "examples", "calibration_data", "tests")
MAX_LINES = 400


def _python_files() -> list[Path]:
    return sorted(p for top in SOURCES for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts)


def test_no_file_over_the_size_limit():
    long = {str(p.relative_to(ROOT)): n for p in _python_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines (split them by idea): {long}"


def _module_names() -> Counter:
    """Module file names across the three packages, except ``__init__``/``__main__``, each registry
    package's ``base.py``, the registered items (``encoders/audio.py``...), named by the package, and
    Triton's Python-backend models, which Triton requires to be called ``model.py``."""
    registered = {"encoders", "fusion", "datasets", "triton_models"}
    return Counter(p.name for top in ("mmedge", "export", "runtime") for p in (ROOT / top).rglob("*.py")
                   if p.name not in ("__init__.py", "__main__.py", "base.py") and "__pycache__" not in p.parts
                   and not registered & set(p.relative_to(ROOT).parts[:-1]))


def test_no_two_source_modules_share_a_name():
    names = _module_names()
    assert not [n for n, c in names.items() if c > 1], names.most_common(3)
    assert not {"pipeline.py", "inputs.py", "benchmark.py"} & set(names)


def _commands() -> list[str]:
    from mmedge.cli import app

    return [c.name or c.callback.__name__ for c in app.registered_commands]


def test_no_two_test_modules_share_a_name():
    """pytest imports test modules by file name (tests/ has no packages): two of one name stop collection."""
    names = Counter(p.name for p in (ROOT / "tests").rglob("test_*.py") if "__pycache__" not in p.parts)
    twice = sorted(n for n, k in names.items() if k > 1)
    assert not twice, f"test modules named alike in two folders (rename one): {twice}"


@pytest.mark.parametrize("argv", [[sys.executable, "-m", "mmedge"], [sys.executable, "-m", "mmedge.cli"], ["mmedge"]],
                         ids=["python -m mmedge", "python -m mmedge.cli", "mmedge script"])
def test_every_command_is_listed_however_the_cli_starts(argv):
    if argv == ["mmedge"] and shutil.which("mmedge") is None:
        pytest.skip("the mmedge console script is not on PATH (package not installed with pip)")
    out = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    commands = _commands()
    assert {"recipes", "train", "export", "inspect", "run", "bench", "demo"} <= set(commands)
    missing = [c for c in commands if f" {c} " not in out.stdout]
    assert not missing, f"{argv} --help does not list {missing}:\n{out.stdout}"
