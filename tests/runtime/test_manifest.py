"""The typed manifest (issue 16, item 5): written from the dataclasses it is read into, one set of
defaults, older bundles' keys upgraded when read."""
from __future__ import annotations

import dataclasses
import json

import pytest

from mmedge.errors import BundleError
from mmedge.runtime import Bundle
from mmedge.runtime.manifest import EncoderInfo, GraphEntry, Manifest, MemberInfo, TensorInfo
from mmedge.runtime.precisions import get_precision


def _document(folder) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_manifest_reads_into_the_dataclasses_and_writes_back_the_same_document(bundle_path):
    raw = _document(bundle_path)
    manifest = Manifest.from_json(raw)
    assert isinstance(manifest.encoders["image"], EncoderInfo) and manifest.encoders["image"].modality == "image"
    assert all(isinstance(m, MemberInfo) for m in manifest.members)
    assert isinstance(manifest.encoders["text"].inputs[0], TensorInfo)
    assert isinstance(manifest.encoders["image"].graphs["fp32"], GraphEntry)
    assert manifest.to_json() == raw
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_bundle_exposes_the_typed_manifest(bundle_path):
    bundle = Bundle.open(bundle_path)
    assert isinstance(bundle.manifest, Manifest)
    assert bundle.members is bundle.manifest.members and bundle.specs is bundle.manifest.inputs
    assert bundle.graph_entry("encoder.image", "fp32") is bundle.manifest.encoders["image"].graphs["fp32"]


def test_every_written_field_is_checked_when_read():
    for cls in (TensorInfo, GraphEntry, EncoderInfo, MemberInfo, Manifest):
        written = [f.name for f in dataclasses.fields(cls) if "key" not in f.metadata]
        assert all("check" in f.metadata for f in dataclasses.fields(cls) if f.name in written), cls


def _older(m: dict) -> None:
    """The form mmedge wrote before the members held their weights (and before graph entries named
    the ORT optimizers kept off): ensemble lists, members without head, weight or temperature."""
    m["ensemble"]["weights"] = [mb.pop("weight") for mb in m["members"]]
    m["ensemble"]["temperatures"] = [mb.pop("temperature") for mb in m["members"]]
    for mb in m["members"]:
        if mb["head"] == mb["name"]:
            del mb["head"]
    for owner in [*m["encoders"].values(), *m["members"]]:
        for g in owner["graphs"].values():
            g.pop("ort_disabled_optimizers", None)


def test_an_older_manifest_upgrades_to_the_same_manifest(bundle_path, tmp_path, tools):
    folder = tools.clone(bundle_path, tmp_path / "old")
    tools.edit_manifest(folder, _older)
    old, new = Bundle.open(folder).manifest, Bundle.open(bundle_path).manifest
    assert old.members == new.members and old.ensemble == new.ensemble
    for precision, entry in old.encoders["image"].graphs.items():
        assert entry.ort_disabled_optimizers == get_precision(precision).ort_disabled_optimizers


def test_unknown_top_level_keys_are_kept_and_written_back(bundle_path, tmp_path, tools):
    folder = tools.clone(bundle_path, tmp_path / "newer")
    tools.edit_manifest(folder, lambda m: m.update(report_of_a_newer_writer={"x": 1}))
    manifest = Bundle.open(folder).manifest
    assert manifest.extra == {"report_of_a_newer_writer": {"x": 1}}
    assert manifest.to_json()["report_of_a_newer_writer"] == {"x": 1}


def test_an_ok_graph_without_its_file_is_refused_by_path(bundle_path, tmp_path, tools):
    folder = tools.clone(bundle_path, tmp_path / "b")
    tools.edit_manifest(folder, lambda m: m["encoders"]["image"]["graphs"]["fp32"].pop("sha256"))
    with pytest.raises(BundleError, match=r"at encoders\.image\.graphs\.fp32\.sha256: is required"):
        Bundle.open(folder, verify=False)
