"""Tests for the bundle writer (mmedge.export.bundle_writer) and reader (mmedge.runtime.bundle)."""
from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from mmedge import BUNDLE_FORMAT
from mmedge.errors import BundleError, ExportError
from mmedge.export.bundle_writer import write_bundle, zip_bundle
from mmedge.runtime import Bundle
from mmedge.runtime.specs import AudioSpec, ImageSpec, TextSpec


# ----------------------------------------------------------------------------- writer


def test_write_bundle_fills_hashes_and_files(built):
    manifest = json.loads((built.path / "manifest.json").read_text())
    on_disk = sorted(p.relative_to(built.path).as_posix() for p in built.path.rglob("*") if p.is_file())
    assert sorted(manifest["files"]) == sorted(r for r in on_disk if r != "manifest.json")
    assert "tokenizer.json" in manifest["files"]
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((built.path / rel).read_bytes()).hexdigest() == digest
    entries = [g for e in manifest["encoders"].values() for g in e["graphs"].values()]
    entries += [g for m in manifest["members"] for g in m["graphs"].values()]
    for g in entries:
        assert g["sha256"] == manifest["files"][g["file"]]
        assert g["bytes"] == (built.path / g["file"]).stat().st_size
    assert "sha256" not in built.manifest["encoders"]["image"]["graphs"]["fp32"]  # input not mutated


def _small_manifest() -> dict:
    return {"format": BUNDLE_FORMAT, "encoders": {"image": {"graphs": {"fp32": {"file": "a/x.onnx"}}}},
            "members": []}


def test_write_bundle_replaces_existing_only_when_complete(tmp_path, monkeypatch):
    src = tmp_path / "x.onnx"
    src.write_bytes(b"graph-1")
    out = tmp_path / "out" / "bundle"
    write_bundle(out, _small_manifest(), {"a/x.onnx": src})
    assert (out / "a/x.onnx").read_bytes() == b"graph-1"
    src.write_bytes(b"graph-2")
    calls = []

    def interrupted_copy(a, b):
        calls.append(a)
        raise KeyboardInterrupt  # as if the process were stopped mid-write

    monkeypatch.setattr(shutil, "copyfile", interrupted_copy)
    with pytest.raises(KeyboardInterrupt):
        write_bundle(out, _small_manifest(), {"a/x.onnx": src})
    monkeypatch.undo()
    assert calls and (out / "a/x.onnx").read_bytes() == b"graph-1"  # old bundle intact
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle"]  # no temp folders left
    write_bundle(out, _small_manifest(), {"a/x.onnx": src})
    assert (out / "a/x.onnx").read_bytes() == b"graph-2"
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle"]


def test_interrupted_first_write_leaves_nothing(tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(ExportError, match="not found"):
        write_bundle(out, _small_manifest(), {"a/x.onnx": tmp_path / "missing.onnx"})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("files, match", [
    ({}, "no such file was given"),
    ({"a/x.onnx": "SRC", "../evil": "SRC"}, "relative POSIX path"),
])
def test_write_bundle_rejects_bad_references(tmp_path, files, match):
    src = tmp_path / "x.onnx"
    src.write_bytes(b"g")
    with pytest.raises(ExportError, match=match):
        write_bundle(tmp_path / "b", _small_manifest(), {k: src for k in files})
    with pytest.raises(ExportError, match="no manifest.json"):
        zip_bundle(tmp_path, tmp_path / "b.mmedge")
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(ExportError, match=r"must end in \.mmedge"):
        zip_bundle(tmp_path, tmp_path / "b.zip")
    bad_format = {**_small_manifest(), "format": "other/1"}
    with pytest.raises(ExportError, match="format"):
        write_bundle(tmp_path / "b", bad_format, {"a/x.onnx": src})


# ----------------------------------------------------------------------------- reader


def test_open_folder_gives_validated_view(bundle_path):
    b = Bundle.open(bundle_path)
    assert b.task == "classification" and len(b.labels) == 10
    assert b.modalities == ("image", "text", "audio") and b.optional_modalities == ("audio",)
    assert isinstance(b.specs["image"], ImageSpec) and b.specs["image"].size == 64
    assert isinstance(b.specs["text"], TextSpec) and isinstance(b.specs["audio"], AudioSpec)
    assert [m.name for m in b.members] == ["concat", "cross_attention"]
    assert b.ensemble.method == "weighted_mean" and tuple(m.weight for m in b.members) == (0.6, 0.4)
    assert tuple(m.temperature for m in b.members) == (1.3, 0.8)
    assert b.precisions() == ["fp32"]
    assert b.graph_path("encoder.image", "fp32") == bundle_path / "encoders/image.fp32.onnx"
    assert b.graph_path("head.concat", "fp32").is_file()
    assert b.tokenizer_path.is_file()
    assert "failed" in b.precision_problem("int8") and "fp32" in b.precision_problem("int8")
    with pytest.raises(BundleError, match="int8"):
        b.graph_path("encoder.image", "int8")
    with pytest.raises(BundleError, match="encoder.image"):
        b.graph_path("encoder.video", "fp32")
    with pytest.raises(Exception):
        b.task = "x"  # frozen


def test_graph_entries_carry_the_onnx_runtime_optimizers_kept_off(bundle_path, tmp_path, tools):
    """Export records them per graph entry; an entry written before that (no key) gets its
    precision record's (old int8-fp16-trt bundles keep WeightBiasQuantization and Q/DQ fusion off)."""
    folder = tools.clone(bundle_path, tmp_path / "b")

    def edit(m):
        for owner in [*m["encoders"].values(), *m["members"]]:  # older bundles: no key
            old = {k: v for k, v in owner["graphs"]["fp32"].items() if k != "ort_disabled_optimizers"}
            owner["graphs"].update({p: dict(old) for p in ("int8-fp16-trt", "not-registered")})
        graphs = {k: e["graphs"] for k, e in m["encoders"].items()}
        graphs["text"]["int8-fp16-trt"]["ort_disabled_optimizers"] = []
        graphs["audio"]["fp32"]["ort_disabled_optimizers"] = ["ConstantFolding"]
        m["precisions"].update({"int8-fp16-trt": "ok", "not-registered": "ok"})

    tools.edit_manifest(folder, edit)
    with Bundle.open(folder) as b:
        off = {(c, p): b.graph_entry(c, p).ort_disabled_optimizers for c, p in [
            ("encoder.image", "int8-fp16-trt"), ("encoder.text", "int8-fp16-trt"), ("encoder.audio", "fp32"),
            ("encoder.audio", "not-registered"), ("encoder.image", "fp32")]}
    assert off == {("encoder.image", "int8-fp16-trt"): ("WeightBiasQuantization", "QDQSelectorActionTransformer"),
                   ("encoder.text", "int8-fp16-trt"): (), ("encoder.audio", "fp32"): ("ConstantFolding",),
                   ("encoder.audio", "not-registered"): (), ("encoder.image", "fp32"): ()}
    tools.edit_manifest(folder, lambda m: m["encoders"]["image"]["graphs"]["fp32"].update(
        ort_disabled_optimizers="WeightBiasQuantization"))
    with pytest.raises(BundleError, match=r"encoders\.image\.graphs\.fp32\.ort_disabled_optimizers"):
        Bundle.open(folder)


def test_open_zip_extracts_and_cleans_up(bundle_path, bundle_zip):
    with zipfile.ZipFile(bundle_zip) as zf:
        assert "manifest.json" in zf.namelist()
    with Bundle.open(bundle_zip) as b:
        root = b.root
        assert root != bundle_path and (root / "manifest.json").is_file()
        assert b.precisions() == ["fp32"]
    assert not root.exists()


def test_zip_with_unsafe_path_is_refused(tmp_path):
    archive = tmp_path / "evil.mmedge"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.txt", "x")
    with pytest.raises(BundleError, match="unsafe path"):
        Bundle.open(archive)
    not_zip = tmp_path / "junk.mmedge"
    not_zip.write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="not a valid .mmedge"):
        Bundle.open(not_zip)


def test_tampered_file_is_named(bundle_path, tmp_path, tools):
    rel = "heads/concat.fp32.onnx"
    folder = tools.clone(bundle_path, tmp_path / "b", copy=(rel,))
    data = bytearray((folder / rel).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / rel).write_bytes(bytes(data))
    expected = json.loads((folder / "manifest.json").read_text())["files"][rel]
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(BundleError) as err:
        Bundle.open(folder)
    msg = str(err.value)
    assert rel in msg and expected in msg and actual in msg and "re-export or re-copy the bundle" in msg


def test_missing_file_is_named(bundle_path, tmp_path, tools):
    folder = tools.clone(bundle_path, tmp_path / "b")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json is missing"):
        Bundle.open(folder)


def test_unknown_format_is_refused_by_name(bundle_path, tmp_path, tools):
    folder = tools.clone(bundle_path, tmp_path / "b")
    tools.edit_manifest(folder, lambda m: m.update(format="mmedge.bundle/9"))
    with pytest.raises(BundleError) as err:
        Bundle.open(folder)
    assert "mmedge.bundle/9" in str(err.value) and BUNDLE_FORMAT in str(err.value)
    assert "re-export" in str(err.value)


@pytest.mark.parametrize("key", ["members", "encoders", "labels", "files", "inputs"])
def test_missing_required_key(bundle_path, tmp_path, key, tools):
    folder = tools.clone(bundle_path, tmp_path / "b")
    tools.edit_manifest(folder, lambda m: m.pop(key))
    with pytest.raises(BundleError, match=repr(key)):
        Bundle.open(folder)


def test_bad_manifest_values(bundle_path, tmp_path, tools):
    folder = tools.clone(bundle_path, tmp_path / "b")
    tools.edit_manifest(folder, lambda m: m["ensemble"].update(weights=[1.0]))
    with pytest.raises(BundleError, match=r"at ensemble.weights: must hold 2 values, got 1"):
        Bundle.open(folder)
    tools.edit_manifest(folder, lambda m: (m["ensemble"].update(weights=[0.6, 0.4]), m["members"][0].update(
        inputs=["image_pooled", "video_pooled"])))
    with pytest.raises(BundleError, match="video_pooled"):
        Bundle.open(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.open(folder)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        Bundle.open(tmp_path / "nowhere")
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.open(tmp_path)


def test_reader_uses_json_loads_only():
    source = Path(__file__).resolve().parents[2].joinpath("runtime", "bundle.py").read_text()
    for forbidden in ("eval(", "exec(", "pickle", "yaml"):
        assert forbidden not in source
