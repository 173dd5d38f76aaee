"""Bundle writer: assembles exported graphs, the tokenizer and ``manifest.json`` into a bundle.

The contract is ``docs/bundle.md``. Writing is atomic: everything goes into a temporary
sibling folder that is renamed into place only once complete, so an interrupted write
leaves nothing under ``out`` and an existing bundle is replaced only by a complete one.
"""
from __future__ import annotations

import copy
import json
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Mapping

from mmedge import BUNDLE_FORMAT
from mmedge.atomic import atomic_file, make_temp_dir, recover_dir, replace_dir, sweep_stale
from mmedge.errors import ExportError
from mmedge.runtime.bundle import sha256_file

__all__ = ["write_bundle", "zip_bundle", "sha256_file", "graph_entries"]

_TEXT_SUFFIXES = (".json", ".txt", ".md")  # deflated; weights barely compress and are stored as is


def graph_entries(manifest: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every graph entry of a manifest: ``encoders[m].graphs[p]``, ``members[i].graphs[p]`` and the merged
    heads graph's ``ensemble.graphs[p]``."""
    for encoder in (manifest.get("encoders") or {}).values():
        yield from (encoder.get("graphs") or {}).values()
    for member in manifest.get("members") or []:
        yield from (member.get("graphs") or {}).values()
    yield from ((manifest.get("ensemble") or {}).get("graphs") or {}).values()


def _check_relpath(relpath: str) -> str:
    pure = PurePosixPath(relpath)
    if not relpath or "\\" in relpath or pure.is_absolute() or ".." in pure.parts or relpath == "manifest.json":
        raise ExportError(f"bundle file path {relpath!r} must be a relative POSIX path inside the bundle "
                          "(no '..', no backslashes, not manifest.json)")
    return str(pure)


def _check_references(manifest: Mapping[str, Any], files: Mapping[str, Path]) -> None:
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ExportError(f"manifest format must be {BUNDLE_FORMAT!r}, got {manifest.get('format')!r}")
    for entry in graph_entries(manifest):
        if "file" in entry and entry["file"] not in files:
            raise ExportError(f"manifest references {entry['file']!r} but no such file was given; "
                              f"given: {sorted(files)}")
    tokenizer = ((manifest.get("inputs") or {}).get("text") or {}).get("tokenizer_file")
    if tokenizer is not None and tokenizer not in files:
        raise ExportError(f"manifest names tokenizer {tokenizer!r} but no such file was given")


def _fill_hashes(manifest: dict[str, Any], folder: Path, relpaths: list[str]) -> None:
    hashes = {rel: sha256_file(folder / rel) for rel in relpaths}
    for entry in graph_entries(manifest):
        if "file" in entry:
            entry["sha256"] = hashes[entry["file"]]
            entry["bytes"] = (folder / entry["file"]).stat().st_size
    manifest["files"] = dict(sorted(hashes.items()))


def write_bundle(out: Path, manifest: Any, files: Mapping[str, Path]) -> Path:
    """Writes a bundle folder atomically.

    Args:
        out: The bundle folder to create (replaced if it exists, only once the new one is complete).
        manifest: The manifest (``mmedge.runtime.manifest.Manifest``; a JSON-ready mapping is also
            taken, for hand-written test bundles); not modified. Graph entries' ``sha256``/``bytes``
            and the top-level ``files`` map are filled in here.
        files: Relative bundle path (POSIX, e.g. ``"encoders/image.fp32.onnx"``) -> source file.

    Returns:
        ``out``.

    Raises:
        ExportError: a wrong format, a missing source file, a bad relative path, or a
            manifest entry naming a file that is not in ``files``.
    """
    out = Path(out)
    files = {_check_relpath(rel): Path(src) for rel, src in files.items()}
    manifest = manifest.to_json() if hasattr(manifest, "to_json") else copy.deepcopy(dict(manifest))
    _check_references(manifest, files)
    missing = [str(src) for src in files.values() if not src.is_file()]
    if missing:
        raise ExportError(f"bundle source files not found: {missing}; export them first")
    out.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(out)
    sweep_stale(out)  # what killed writers left
    tmp = make_temp_dir(out)
    try:
        for rel, src in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / rel)
        _fill_hashes(manifest, tmp, list(files))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def zip_bundle(folder: Path, dst: Path) -> Path:
    """Zips a bundle folder into a single ``.mmedge`` file (``manifest.json`` at the zip root).

    Args:
        folder: A bundle folder written by ``write_bundle``.
        dst: The ``.mmedge`` file to write (written to a temporary sibling, then renamed).

    Returns:
        ``dst``.
    """
    folder, dst = Path(folder), Path(dst)
    if not (folder / "manifest.json").is_file():
        raise ExportError(f"{folder} is not a bundle folder (no manifest.json); write it with write_bundle")
    if dst.suffix != ".mmedge":
        raise ExportError(f"bundle archive name must end in .mmedge, got {dst.name}")
    with atomic_file(dst) as f, zipfile.ZipFile(f, "w") as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            method = zipfile.ZIP_DEFLATED if path.suffix in _TEXT_SUFFIXES else zipfile.ZIP_STORED
            zf.write(path, path.relative_to(folder).as_posix(), compress_type=method)
    return dst
