"""Extraction of a ``.mmedge`` archive into a private temporary folder, within ``Limits``.

Every entry is checked before anything is written: a relative path that stays inside, no link,
no duplicate, at most ``max_zip_members`` entries and ``max_zip_bytes`` uncompressed bytes; while
writing, no entry may give more bytes than it declared (a zip bomb with a lying header stops
there).
"""
from __future__ import annotations

import stat
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from mmedge.errors import BundleError
from mmedge.runtime.limits import Limits

__all__ = ["extract_archive"]

_FIX = "re-copy the bundle, or re-zip it with mmedge's zip_bundle"
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError,
               NotImplementedError, RuntimeError, struct.error, OverflowError, UnicodeError)
_BLOCK = 1 << 20


def _check_entries(archive: Path, infos: list[zipfile.ZipInfo], limits: Limits) -> None:
    if len(infos) > limits.max_zip_members:
        raise BundleError(f"{archive} holds {len(infos)} entries, more than max_zip_members "
                          f"({limits.max_zip_members}); {_FIX}, or {limits.raise_hint('max_zip_members')}")
    total = sum(i.file_size for i in infos)
    if total > limits.max_zip_bytes:
        raise BundleError(f"{archive} unpacks to {total} bytes, more than max_zip_bytes ({limits.max_zip_bytes}); "
                          f"{_FIX}, or {limits.raise_hint('max_zip_bytes')}")
    seen = set()
    for info in infos:
        name = info.filename.rstrip("/")
        pure = PurePosixPath(name)
        if (not name or pure.is_absolute() or ".." in pure.parts or "\\" in name or "\x00" in name
                or (len(name) > 1 and name[1] == ":")):
            raise BundleError(f"{archive} holds an unsafe path {info.filename!r}; {_FIX}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise BundleError(f"{archive} holds a symbolic link {info.filename!r}; bundles hold files only: {_FIX}")
        if str(pure) in seen:
            raise BundleError(f"{archive} holds {info.filename!r} twice; {_FIX}")
        seen.add(str(pure))


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, root: Path, archive: Path) -> None:
    target = root / PurePosixPath(info.filename.rstrip("/"))
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    left = info.file_size
    with zf.open(info) as src, open(target, "wb") as dst:
        while block := src.read(min(_BLOCK, left + 1)):
            left -= len(block)
            if left < 0:
                raise BundleError(f"{archive}: entry {info.filename!r} holds more bytes than it declares; {_FIX}")
            dst.write(block)


def extract_archive(archive: Path, limits: Limits) -> tempfile.TemporaryDirectory:
    """Extracts ``archive`` into a new private temporary folder (the caller cleans it up).

    Raises:
        BundleError: not a zip, a damaged or encrypted one, or an entry or size over the limits.
    """
    tmp = tempfile.TemporaryDirectory(prefix="mmedge-bundle-")
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            _check_entries(archive, infos, limits)
            for info in infos:
                _copy_member(zf, info, Path(tmp.name), archive)
    except BundleError:
        tmp.cleanup()
        raise
    except _ZIP_ERRORS as exc:
        tmp.cleanup()
        raise BundleError(f"{archive} is not a valid .mmedge zip ({type(exc).__name__}: {exc}); {_FIX}") from exc
    except BaseException:
        tmp.cleanup()
        raise
    return tmp

