"""``mmedge.atomic``: folder replacement that never leaves a half folder, recovery, stale sweeping,
and file writes that leave the old file or the new one."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mmedge import atomic


def _folder(path, text):
    path.mkdir()
    (path / "f.txt").write_text(text)
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_replace_dir(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    out = _folder(tmp_path / "out", "old")
    tmp = atomic.make_temp_dir(out)
    (tmp / "f.txt").write_text("new")
    atomic.replace_dir(tmp, out)
    assert (out / "f.txt").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    atomic.replace_dir(_folder(atomic.temp_sibling(out, "tmp"), "first"), tmp_path / "fresh")
    assert (tmp_path / "fresh" / "f.txt").read_text() == "first"


def test_recover_puts_back_the_previous_folder_of_a_dead_writer(tmp_path):
    out = tmp_path / "out"
    _folder(out.with_name(f".out.old-{_dead_pid()}-abcd1234"), "previous")
    atomic.recover_dir(out)
    assert (out / "f.txt").read_text() == "previous"


def test_sweep_removes_only_what_dead_writers_left(tmp_path):
    out = _folder(tmp_path / "out", "x")
    dead = _folder(out.with_name(f".out.tmp-{_dead_pid()}-abcd1234"), "half")
    mine = _folder(atomic.temp_sibling(out, "work"), "busy")
    other = _folder(tmp_path / ".out.notes", "user's")
    assert atomic.sweep_stale(out) == [dead.name]
    assert mine.exists() and other.exists() and out.exists()


def test_pid_alive():
    assert atomic.pid_alive(os.getpid()) and not atomic.pid_alive(_dead_pid())


def test_atomic_write_leaves_old_file_or_new_one(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "timing.cache"
    atomic.atomic_write(target, b"old")

    def crash(*_a):
        raise OSError("killed mid-rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        atomic.atomic_write(target, b"new")
    assert target.read_bytes() == b"old" and os.listdir(target.parent) == ["timing.cache"]  # no temp file left


def test_atomic_file_streams_and_leaves_nothing_on_error(tmp_path):
    import numpy as np

    target = tmp_path / "pool.npz"
    with atomic.atomic_file(target) as f:
        np.savez(f, a=np.arange(3))
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_file(target) as f:
            f.write(b"half")
            raise KeyboardInterrupt
    with np.load(target) as z:
        assert z["a"].tolist() == [0, 1, 2]
    assert os.listdir(tmp_path) == ["pool.npz"]  # the exact name, no temp file left
