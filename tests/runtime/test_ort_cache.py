"""ONNX Runtime's optimized graphs cached on disk (``runtime/backends/ort_cache.py``)."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from mmedge.runtime import Session
from mmedge.runtime.backends import GraphRef, LoadSettings
from mmedge.runtime.backends.ort_cache import (CACHE_FOLDER, GRAPH_FILE, OFF_VARIABLE, WEIGHTS_FILE, cache_entry,
                                               cache_folder)
from mmedge.runtime.integrity import cache_root


def _inputs(rng):
    return {"image": [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)], "text": ["a small cat"]}


def _entries(folder):
    """The cached graph files (one per entry folder)."""
    return sorted(folder.glob(f"*/{GRAPH_FILE}")) if folder.is_dir() else []


def test_a_second_session_loads_the_cached_graphs_and_predicts_the_same(bundle_path, tmp_path, rng, monkeypatch):
    engines = tmp_path / "engines"
    inputs = _inputs(rng)
    with Session(bundle_path, backend="ort", threads=1, engine_dir=engines) as first:
        expected = first.predict(**inputs)
    entries = _entries(engines / CACHE_FOLDER)
    assert len(entries) == 5  # image, text and audio encoders, two heads
    written = {p: p.stat().st_ino for p in entries}
    with Session(bundle_path, backend="ort", threads=1, engine_dir=engines) as second:
        again = second.predict(**inputs)
    assert {p: p.stat().st_ino for p in _entries(engines / CACHE_FOLDER)} == written  # read, not written again
    assert not [p for p in (engines / CACHE_FOLDER).iterdir() if p.name.startswith(".")]  # no temporary folder left
    monkeypatch.setenv(OFF_VARIABLE, "0")
    with Session(bundle_path, backend="ort", threads=1, engine_dir=tmp_path / "off") as uncached:
        plain = uncached.predict(**inputs)
    assert not (tmp_path / "off").exists()
    for pred in (again, expected):
        np.testing.assert_array_equal(pred.probabilities, plain.probabilities)


def test_the_weights_are_stored_beside_the_graph(bundle_path, tmp_path, rng):
    """Large initializers go to WEIGHTS_FILE (loaded without a protobuf copy); the graph file keeps the rest."""
    import onnx

    engines = tmp_path / "engines"
    with Session(bundle_path, backend="ort", threads=1, engine_dir=engines) as session:
        session.predict(**_inputs(rng))
    text = cache_entry(LoadSettings(session.bundle.source, "fp32", engines),
                       GraphRef.from_bundle(session.bundle, "encoder.text", "fp32"), ())
    weights = (text / WEIGHTS_FILE).stat().st_size
    assert weights > 10 * (text / GRAPH_FILE).stat().st_size
    model = onnx.load(text / GRAPH_FILE, load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


@pytest.mark.parametrize("damage", ["graph", "weights", "no weights"])
def test_a_damaged_entry_is_ignored_and_written_again(bundle_path, tmp_path, rng, damage):
    engines, inputs = tmp_path / "engines", _inputs(rng)
    with Session(bundle_path, backend="ort", threads=1, engine_dir=engines) as first:
        expected = first.predict(**inputs).probabilities
    for entry in _entries(engines / CACHE_FOLDER):
        weights = entry.parent / WEIGHTS_FILE
        if damage == "graph":
            entry.write_bytes(b"not an onnx graph")
        elif weights.is_file():
            weights.unlink() if damage == "no weights" else weights.write_bytes(b"short")
    with Session(bundle_path, backend="ort", threads=1, engine_dir=engines) as second:
        np.testing.assert_array_equal(second.predict(**inputs).probabilities, expected)
    assert all(e.stat().st_size > 1000 for e in _entries(engines / CACHE_FOLDER))
    assert any((e.parent / WEIGHTS_FILE).stat().st_size > 1000 for e in _entries(engines / CACHE_FOLDER))


def test_a_session_never_writes_its_cache_into_the_bundle(bundle_path, tools, tmp_path, rng):
    folder = tools.clone(bundle_path, tmp_path / "b")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    with Session(folder, backend="ort", threads=1) as session:  # default engine root: <bundle>/engines
        session.predict(**_inputs(rng))
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert len(_entries(cache_root() / "onnxruntime")) >= 5


def test_a_killed_writers_temporary_folder_is_removed(bundle_path, tmp_path, rng):
    engines = tmp_path / "engines"
    with Session(bundle_path, backend="ort", threads=1, engine_dir=engines) as session:
        session.predict(**_inputs(rng))
    entry = _entries(engines / CACHE_FOLDER)[0].parent
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = entry.with_name(f".{entry.name}.tmp-{int(gone.stdout)}-deadbeef")
    stale.mkdir()
    (stale / GRAPH_FILE).write_bytes(b"half written")
    shutil.rmtree(entry)  # the next Session writes this entry again
    with Session(bundle_path, backend="ort", threads=1, engine_dir=engines) as session:
        session.predict(**_inputs(rng))
    assert not stale.exists() and (entry / GRAPH_FILE).is_file()


def test_an_unwritable_location_runs_without_the_cache(bundle_path, tmp_path, rng):
    blocker = tmp_path / "engines"
    blocker.write_text("a file where the engine root's folder would be")
    with Session(bundle_path, backend="ort", threads=1, engine_dir=blocker) as session:
        assert session.predict(**_inputs(rng)).label


@pytest.mark.parametrize("backend", ["ort-cuda", "ort-trt"])
def test_only_the_cpu_loader_caches(backend):
    from mmedge.runtime.backends import get_backend

    assert get_backend("ort").loader.caches_optimized and not get_backend(backend).loader.caches_optimized


def test_the_entry_name_changes_with_what_the_optimized_graph_depends_on(bundle_path, tmp_path):
    from mmedge.runtime import Bundle

    bundle = Bundle.open(bundle_path)
    settings = LoadSettings(bundle.source, "fp32", tmp_path / "engines")
    image, text = (GraphRef.from_bundle(bundle, c, "fp32") for c in ("encoder.image", "encoder.text"))
    assert cache_folder(settings) == tmp_path / "engines" / CACHE_FOLDER
    names = {cache_entry(settings, image, ()), cache_entry(settings, text, ()),
             cache_entry(settings, image, ("ConstantFolding",))}
    assert len(names) == 3 and cache_entry(settings, image, ()) == cache_entry(settings, image, ())
    inside = LoadSettings(bundle.source, "fp32", bundle.source / "engines")
    assert cache_folder(inside) == cache_root() / "onnxruntime"
