"""Integrity of bundle files: paths that stay inside the bundle, hashes checked once per bundle
version, and the exact bytes that were checked handed to the loaders.

* Every file is reached through ``resolve_inside``: a path or a symlink that leads out of the
  bundle folder is refused, whether hashes are verified or not.
* ``verify_files`` hashes every listed file once, then writes a *verified stamp* in the user's
  cache (``$MMEDGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmedge``, else ``~/.cache/mmedge``) keyed by
  the manifest's sha256 and each file's device, inode, size, mtime and ctime. The next open of
  the same bundle version finds the stamp and hashes nothing; a copied, replaced or rewritten
  file has another inode or ctime, so it is hashed again.
* ``read_file`` reads a file whole and returns those bytes, for ONNX Runtime and the tokenizer to
  load from memory: if the open file is not the one that was verified (another identity), the
  bytes read are hashed and must match the manifest, so a file swapped after verification is
  never run.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import IO, Mapping

from mmedge.atomic import atomic_write
from mmedge.errors import BundleError

__all__ = ["hash_stream", "sha256_file", "resolve_inside", "verify_files", "read_file", "stamp_dir", "cache_root", "Identity"]

Identity = tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns
_CHUNK = 1 << 20
_STAMP_VERSION = "mmedge-verified/1"
_RECOPY = "re-export or re-copy the bundle"


def hash_stream(stream: IO[bytes]) -> str:
    """Hex sha256 of a binary stream, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(_CHUNK), b""):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file."""
    with open(path, "rb") as f:
        return hash_stream(f)


def _identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def resolve_inside(root: Path, rel: str) -> Path:
    """The real path of bundle file ``rel``, refusing anything that leads outside ``root``.

    Raises:
        BundleError: a missing file, a path or symlink (of the file or a folder on its way)
            that resolves outside the bundle, or something that is not a regular file.
    """
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(Path(root) / rel))
    if real != real_root and real_root not in real.parents:
        raise BundleError(f"bundle file {rel} resolves to {real}, outside the bundle {real_root} (a symlink or "
                          f"'..' leads out); a bundle reads only its own files: {_RECOPY} without links")
    if not real.is_file():
        what = "is missing from" if not real.exists() else "is not a regular file in"
        raise BundleError(f"bundle file {rel} {what} {root}; {_RECOPY}")
    return real


def cache_root() -> Path:
    """mmedge's per-user cache: ``$MMEDGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmedge``, else ``~/.cache/mmedge``."""
    base = os.environ.get("MMEDGE_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = os.path.join(xdg, "mmedge") if xdg else os.path.join(os.path.expanduser("~"), ".cache", "mmedge")
    return Path(base)


def stamp_dir() -> Path:
    """Where verified stamps are kept (``cache_root()/verified``)."""
    return cache_root() / "verified"


def _stamp_key(manifest_sha: str, identities: Mapping[str, Identity]) -> str:
    payload = json.dumps([_STAMP_VERSION, manifest_sha, sorted(identities.items())])
    return hashlib.sha256(payload.encode()).hexdigest()


def _write_stamp(key: str, root: Path, count: int) -> None:
    try:
        atomic_write(stamp_dir() / key, json.dumps({"bundle": str(root), "files": count, "verified_at": time.time()}))
    except OSError:
        pass  # a read-only cache only means hashing again next time


def _check_hash(rel: str, expected: str, actual: str, *, after: bool = False) -> None:
    if actual != expected:
        when = "changed after the bundle was verified" if after else "was modified or corrupted"
        raise BundleError(f"bundle file {rel} {when}: sha256 expected {expected}, got {actual}; {_RECOPY}"
                          + (" and open it again" if after else ""))


def verify_files(root: Path, files: Mapping[str, str], manifest_sha: str, *, stamp: bool = True
                 ) -> dict[str, Identity]:
    """Checks every file's sha256, unless a stamp says this bundle version was checked already.

    Args:
        root: The bundle folder.
        files: Relative path -> expected sha256 (the manifest's ``files``).
        manifest_sha: sha256 of ``manifest.json`` as read.
        stamp: Look for and write a verified stamp (off for a ``.mmedge`` extracted to a temporary
            folder: its files are new at every open).

    Returns:
        Relative path -> the identity of the file that was verified (for ``read_file``).

    Raises:
        BundleError: a missing, escaping, modified or corrupted file (named, with both hashes).
    """
    paths = {rel: resolve_inside(root, rel) for rel in files}
    identities = {rel: _identity(os.stat(path)) for rel, path in paths.items()}
    key = _stamp_key(manifest_sha, identities)
    if stamp and (stamp_dir() / key).is_file():
        return identities
    for rel, path in paths.items():
        with open(path, "rb") as f:
            before = _identity(os.fstat(f.fileno()))
            actual = hash_stream(f)
            if _identity(os.fstat(f.fileno())) != before:
                raise BundleError(f"bundle file {rel} changed while it was being verified; {_RECOPY}")
        _check_hash(rel, files[rel], actual)
        identities[rel] = before
    if stamp:
        _write_stamp(_stamp_key(manifest_sha, identities), root, len(files))
    return identities


def read_file(root: Path, rel: str, *, sha256: str | None = None, verified: Identity | None = None) -> bytes:
    """The bytes of bundle file ``rel``, as checked.

    Args:
        root: The bundle folder.
        rel: The file's relative path.
        sha256: The expected hash (None: not verified, e.g. ``Bundle.open(verify=False)``).
        verified: The identity of the file when it was verified; the bytes of a file with
            another identity are hashed again.

    Raises:
        BundleError: a file that leads outside the bundle, changed while read, or whose bytes
            do not match ``sha256``.
    """
    with open(resolve_inside(root, rel), "rb") as f:
        before = _identity(os.fstat(f.fileno()))
        data = f.read()
        if _identity(os.fstat(f.fileno())) != before:
            raise BundleError(f"bundle file {rel} changed while it was being read; {_RECOPY}")
    if sha256 is not None and before != verified:
        _check_hash(rel, sha256, hashlib.sha256(data).hexdigest(), after=verified is not None)
    return data
