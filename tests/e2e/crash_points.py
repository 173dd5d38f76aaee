"""Runs ``mmedge <args>`` and SIGKILLs its writing step at every file-system operation it makes.

Usage: ``python tests/e2e/crash_points.py LOG {bundle|checkpoint} SEED TARGET -- <mmedge args>``

The command runs normally until it reaches the step that writes TARGET (``write_bundle`` for
``mmedge export``, ``save_checkpoint`` for ``mmedge train``; other calls, such as the export's
candidate bundle, pass through). There, the process forks: a first
child runs the step to the end and counts the file-system operations it makes (``open`` for
writing, ``rename``/``replace``, ``mkdir``, ``remove``, ``rmdir``, ``rmtree``, ``copyfile``,
``ctypes`` calls: Python's audit events); then one child per crash point ``k`` runs the step and
SIGKILLs itself just before operation ``k``, and a few more are SIGKILLed by this process at
random moments of the step. After each kill the target's state (sha256 of every file, or
"absent") is written to LOG as a JSON line, and the target is put back as it was. Then the
process runs the step itself, after one last random kill whose leftovers it does not clean: the
"rerun", which must succeed and leave the new target. The test compares every state with the
previous target and the new one.

Forking at the writing step is what lets every crash point be tried without paying for the
training or the export each time: each child *is* the command at that moment.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_EVENTS = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "shutil.copyfile", "shutil.move",
           "os.link", "os.symlink", "os.truncate", "os.chmod", "ctypes.call_function"}
_ARMED = {"on": False, "count": 0, "kill_at": None}
RANDOM_KILLS = 4


def _hook(event: str, args: tuple) -> None:
    if not _ARMED["on"]:
        return
    if event == "open":
        mode, flags = args[1], args[2]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS)
        if not writes:
            return
    elif event not in _EVENTS:
        return
    _ARMED["count"] += 1
    if _ARMED["count"] == _ARMED["kill_at"]:
        os.kill(os.getpid(), signal.SIGKILL)


def state(target: Path) -> dict | None:
    """sha256 of every file under ``target`` (None when it does not exist)."""
    if not target.exists():
        return None
    return {p.relative_to(target).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(target.rglob("*")) if p.is_file()}


def _link_copy(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, copy_function=os.link)


def _restore(target: Path, backup: Path | None) -> None:
    if target.exists():
        shutil.rmtree(target)
    for junk in target.parent.glob(f".{target.name}.*"):
        if not junk.name.startswith(f".{target.name}.work"):  # the export's own work folder
            shutil.rmtree(junk) if junk.is_dir() else junk.unlink()
    if backup is not None:
        _link_copy(backup, target)


def _child(step, args, kwargs, kill_at: int | None, counter_fd: int | None) -> None:
    _ARMED.update(on=True, count=0, kill_at=kill_at)
    try:
        step(*args, **kwargs)
    finally:
        _ARMED["on"] = False
        if counter_fd is not None:
            os.write(counter_fd, str(_ARMED["count"]).encode())
        os._exit(0)


def _run_child(step, args, kwargs, *, kill_at: int | None = None, kill_after: float | None = None) -> int:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        _child(step, args, kwargs, kill_at, write)
    os.close(write)
    if kill_after is not None:
        time.sleep(kill_after)
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    count = os.read(read, 64)
    os.close(read)
    return int(count) if count else -1


def crash_test(step, target: Path, log: Path, seed: int):
    """Wraps the writing step ``step(out, ...)``; crashes the calls whose ``out`` is ``target``."""
    rng = random.Random(seed)

    def wrapped(out, *args, **kwargs):
        if Path(out).resolve() != target.resolve():
            return step(out, *args, **kwargs)
        previous = state(target)
        backup = target.parent / f"crash-backup-{target.name}" if previous is not None else None
        if backup is not None:
            _link_copy(target, backup)
        start = time.perf_counter()
        total = _run_child(step, (out, *args), kwargs)  # counts the operations; leaves the new target
        duration = time.perf_counter() - start
        new = state(target)
        _restore(target, backup)
        plan = [("op", k) for k in range(1, total + 1)] + [("time", rng.uniform(0, duration)) for _ in range(RANDOM_KILLS)]
        with open(log, "a") as f:
            f.write(json.dumps({"previous": previous, "new": new, "operations": total, "seconds": duration}) + "\n")
            for kind, at in plan:
                kw = {"kill_at": at} if kind == "op" else {"kill_after": at}
                ran = _run_child(step, (out, *args), kwargs, **kw)
                f.write(json.dumps({"kind": kind, "at": at, "completed": ran >= 0, "state": state(target),
                                    "leftovers": sorted(p.name for p in target.parent.glob(f".{target.name}.*"))}) + "\n")
                _restore(target, backup)
            _run_child(step, (out, *args), kwargs, kill_after=rng.uniform(0, duration))  # leftovers stay
        if backup is not None:
            shutil.rmtree(backup)
        return step(out, *args, **kwargs)  # the rerun

    return wrapped


def main() -> None:
    log, kind, seed, target = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    args = sys.argv[sys.argv.index("--") + 1:]
    sys.addaudithook(_hook)
    if kind == "bundle":
        import mmedge.export.bundle_writer as module

        module.write_bundle = crash_test(module.write_bundle, target, log, seed)
    else:
        import mmedge.checkpoint as module

        module.save_checkpoint = crash_test(module.save_checkpoint, target, log, seed)
    from mmedge.cli import app

    sys.argv = ["mmedge", *args]
    app()


if __name__ == "__main__":
    main()
