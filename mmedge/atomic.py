"""Atomic replacement of an output folder (a bundle, a checkpoint) or file (an archive, an engine, a
cache entry): whatever moment the writer is killed at, the output path holds the complete previous
folder or file, or the complete new one. Every atomic write of the project goes through here.

A file is written to a temporary sibling (``atomic_file`` / ``atomic_write``), flushed to disk,
then renamed over the output; on any error the temporary file is removed.

A writer builds the new folder in a temporary sibling (``temp_sibling``), flushes it to disk, then
``replace_dir`` swaps it in. On Linux the swap is one ``renameat2(RENAME_EXCHANGE)`` system call:
there is no moment without a folder at the output path. Elsewhere (or on a file system without
it) the old folder is first renamed aside, and ``recover_dir`` puts it back if the writer died
between the two renames. Temporary siblings carry the writer's process id, so ``sweep_stale``
removes those of writers that are gone (killed), and never those of a writer still running.
Plain Python, no torch and no numpy: the exporter, the training loop and the runtime share it.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator

__all__ = ["temp_sibling", "make_temp_dir", "replace_dir", "recover_dir", "sweep_stale", "fsync_tree", "pid_alive",
           "atomic_file", "atomic_write"]

_KINDS = ("tmp", "old", "work")
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}


def temp_sibling(out: Path, kind: str) -> Path:
    """A new sibling name of ``out`` for this process: ``.<name>.<kind>-<pid>-<random>``."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    return out.with_name(f".{out.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def make_temp_dir(out: Path, kind: str = "tmp") -> Path:
    """Creates and returns a new temporary sibling folder of ``out`` (mode 0755, like a normal folder)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    path = temp_sibling(out, kind)
    path.mkdir(mode=0o755)
    return path


def _pid_of(sibling: str, name: str) -> int | None:
    match = re.fullmatch(rf"\.{re.escape(name)}\.(?:{'|'.join(_KINDS)})-(\d+)-[0-9a-z_]+", sibling)
    return int(match.group(1)) if match else None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (True for this process, and for one of another user)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_dir(out: Path) -> None:
    """Puts back the previous folder if a writer died between its two renames (not on Linux)."""
    if out.exists():
        return
    olds = [p for p in out.parent.glob(f".{out.name}.old-*") if p.is_dir() and _pid_of(p.name, out.name)]
    olds = [p for p in olds if not pid_alive(_pid_of(p.name, out.name))]
    if olds:
        os.replace(max(olds, key=lambda p: p.stat().st_mtime), out)


def sweep_stale(out: Path) -> list[str]:
    """Removes the temporary siblings of ``out`` left by writers that no longer run; returns their names."""
    gone = []
    for path in out.parent.glob(f".{out.name}.*"):
        pid = _pid_of(path.name, out.name)
        if pid is not None and not pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            gone.append(path.name)
    return gone


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flushes every file and folder under ``folder`` to disk (a power cut then keeps it whole)."""
    for path in sorted(folder.rglob("*"), reverse=True) + [folder]:
        _fsync(path)


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths in one system call; False where the platform or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def replace_dir(tmp: Path, out: Path) -> None:
    """Makes the complete folder ``tmp`` the folder ``out``; the previous ``out`` is removed.

    ``tmp`` must be a sibling of ``out`` (same file system). Whatever moment the process is
    killed at, ``out`` is the old folder or the new one (see the module docstring).
    """
    fsync_tree(tmp)
    if not out.exists():
        os.replace(tmp, out)
    elif _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # now the previous folder
    else:
        old = temp_sibling(out, "old")
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    _fsync(out.parent)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """Opens a new temporary sibling of ``path`` for binary writing; when the block ends without
    an error, flushes it to disk and renames it over ``path``. On any error (or interrupt) the
    temporary file is removed and ``path`` is left as it was.

        with atomic_file(out) as f:
            np.savez(f, **arrays)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path, "tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Writes ``data`` (a ``str`` as UTF-8) to ``path`` through ``atomic_file``; returns ``path``."""
    with atomic_file(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else bytes(data))
    return Path(path)
