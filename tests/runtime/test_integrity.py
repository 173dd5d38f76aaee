"""Integrity: nothing leaves the bundle, hashes are checked once per bundle version, and the graphs a
Session runs are the bytes that were hashed (issue 11, "escapes" and "integrity without the cost")."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmedge.errors import BundleError
from mmedge.runtime import Bundle, Session
from mmedge.runtime import integrity
from mmedge.runtime.backends import ort as ort_backend

HEAD = "heads/concat.fp32.onnx"


@pytest.fixture
def folder(bundle_path, tmp_path, tools):
    return tools.clone(bundle_path, tmp_path / "b")


@pytest.fixture
def stamps(tmp_path, monkeypatch):
    """A private verified-stamp folder."""
    path = tmp_path / "stamps"
    monkeypatch.setenv("MMEDGE_CACHE_DIR", str(path))
    return path


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
def test_symlink_leaving_the_bundle_is_refused(folder, tmp_path, verify):
    outside = tmp_path / "outside.onnx"
    shutil.copyfile(folder / HEAD, outside)  # same bytes: the hash alone would not notice
    (folder / HEAD).unlink()
    os.symlink(outside, folder / HEAD)
    with pytest.raises(BundleError, match=r"heads/concat.fp32.onnx.*outside the bundle"):
        Bundle.open(folder, verify=verify)


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
def test_symlinked_folder_leaving_the_bundle_is_refused(folder, tmp_path, verify):
    shutil.move(folder / "heads", tmp_path / "heads")
    os.symlink(tmp_path / "heads", folder / "heads")
    with pytest.raises(BundleError, match="outside the bundle"):
        Bundle.open(folder, verify=verify)


def test_symlink_inside_the_bundle_and_a_symlinked_root_are_fine(folder, tmp_path):
    shutil.copyfile(folder / HEAD, folder / "heads" / "real.onnx")
    (folder / HEAD).unlink()
    os.symlink("real.onnx", folder / HEAD)
    link = tmp_path / "link"
    os.symlink(folder, link)
    with Bundle.open(link) as b:
        assert b.precisions() == ["fp32"]


def test_hashes_are_checked_once_per_bundle_version(folder, stamps, monkeypatch, tools):
    calls = []
    real = integrity.hash_stream
    monkeypatch.setattr(integrity, "hash_stream", lambda f: calls.append(1) or real(f))
    Bundle.open(folder).close()
    first = len(calls)
    assert first >= 5 and list(stamps.rglob("*"))
    Bundle.open(folder).close()
    assert len(calls) == first  # verified stamp: no hashing
    tools.edit_manifest(folder, lambda m: m.update(name="renamed"))  # a new bundle version
    Bundle.open(folder).close()
    assert len(calls) == 2 * first


def test_tampering_after_a_stamp_is_still_caught(folder, stamps):
    Bundle.open(folder).close()
    path = folder / HEAD
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    stat = path.stat()
    path.unlink()  # a fresh inode, as a copy would give
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime
    with pytest.raises(BundleError, match="modified or corrupted"):
        Bundle.open(folder)


def test_graph_swapped_after_verification_is_not_run(folder, stamps):
    bundle = Bundle.open(folder)
    other = folder / "heads/cross_attention.fp32.onnx"
    (folder / HEAD).unlink()
    shutil.copyfile(other, folder / HEAD)  # a valid graph, but not the one that was hashed
    with pytest.raises(BundleError, match=r"heads/concat.fp32.onnx.*changed after"):
        Session(bundle, threads=1)
    bundle.close()


def test_session_runs_the_bytes_that_were_hashed(folder, stamps, monkeypatch, rng):
    """ONNX Runtime loads the verified bytes (an in-memory file on Linux), never the bundle file again."""
    import hashlib

    seen = []
    real = ort_backend.create_session

    def spy(graph, **kw):
        assert isinstance(graph, bytes) or not str(graph).startswith(str(folder)), graph
        seen.append(graph if isinstance(graph, bytes) else Path(graph).read_bytes())
        return real(graph, **kw)

    monkeypatch.setattr(ort_backend, "create_session", spy)
    with Session(folder, backend="ort", threads=1) as s:
        s.predict(image=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), text="seven")
    hashes = set(json.loads((folder / "manifest.json").read_text())["files"].values())
    assert seen and {hashlib.sha256(b).hexdigest() for b in seen} <= hashes


def test_no_verify_still_reads_inside_the_bundle_only(folder, tools, tmp_path):
    shutil.copyfile(folder / HEAD, tmp_path / "x.onnx")

    def escape(m):
        m["members"][0]["graphs"]["fp32"]["file"] = "../x.onnx"
        m["files"]["../x.onnx"] = m["files"].pop(HEAD)
    tools.edit_manifest(folder, escape)
    with pytest.raises(BundleError, match="x.onnx"):
        Bundle.open(folder, verify=False)


def test_unwritable_stamp_folder_only_costs_time(folder, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MMEDGE_CACHE_DIR", str(blocker / "sub"))
    with Bundle.open(folder) as b:
        assert b.precisions() == ["fp32"]


def test_stamp_is_data(folder, stamps):
    Bundle.open(folder).close()
    for path in stamps.rglob("*"):
        if path.is_file():
            json.loads(path.read_text())


def test_an_extracted_archive_leaves_no_stamp(bundle_zip, stamps):
    Bundle.open(bundle_zip).close()
    assert not [p for p in stamps.rglob("*") if p.is_file()]
