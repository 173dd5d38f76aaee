"""ONNX Runtime's TensorRT EP options (issue 20 items 1 and 6), checked on a CPU machine.

The options are what ``OrtTensorRTLoader`` hands ``InferenceSession``: the cache folder must
exist (with its parents) before the EP sees it, every graph gets an explicit profile from the
manifest, and a float16 graph gets ``trt_fp16_enable``. A requested TensorRT EP that did not
register is named in the backend fallback (ONNX Runtime really leaves it out here: no TensorRT).
"""
from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mmedge.export.engine_profiles import component_profiles
from mmedge.runtime import Session
from mmedge.runtime.backends.base import GraphRef, LoadSettings
from mmedge.runtime.backends.ort import OrtCudaLoader, OrtTensorRTLoader
from mmedge.runtime.backends.ort_trt import (cache_options, fp16_options, graph_options, graph_precision,
                                             profile_options)
from mmedge.runtime.backends.trt_engines import ort_trt_cache_dir
from mmedge.runtime.bundle import Bundle

EP = "TensorrtExecutionProvider"


def _graphs(bundle_path: Path) -> dict[str, GraphRef]:
    with Bundle.open(bundle_path) as bundle:
        return {c: GraphRef.from_bundle(bundle, c, "fp32") for c in bundle.components()}


def test_cache_folder_is_created_with_its_parents(tmp_path):
    root = tmp_path / "not" / "yet" / "engines"
    options = cache_options(root)
    cache = ort_trt_cache_dir(root)
    assert cache.is_dir() and options["trt_engine_cache_path"] == options["trt_timing_cache_path"] == str(cache)


def test_unwritable_cache_folder_turns_the_caches_off_with_a_warning(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="cannot create"):
        assert cache_options(blocker / "engines") == {}


def test_every_graph_gets_the_manifest_profile(bundle_path, tmp_path):
    settings = LoadSettings(bundle_path, "fp32", tmp_path / "engines")
    make = OrtTensorRTLoader.for_session(settings)
    with Bundle.open(bundle_path) as bundle:
        want = component_profiles(bundle, max_batch=8)
    for component, graph in _graphs(bundle_path).items():
        options = make(graph).provider_options[EP]
        for which in ("min", "opt", "max"):
            parts = dict(item.split(":") for item in options[f"trt_profile_{which}_shapes"].split(","))
            assert parts == {p.name: "x".join(map(str, getattr(p, which))) for p in want[component]}, component
        assert "trt_fp16_enable" not in options
    text = make(_graphs(bundle_path)["encoder.text"]).provider_options[EP]
    assert text["trt_profile_min_shapes"].startswith("input_ids:1x1") and ":8x" in text["trt_profile_max_shapes"]
    assert OrtCudaLoader.for_session(settings)(_graphs(bundle_path)["encoder.text"]).provider_options == {}


def test_profile_string_form():
    class P:  # a ProfileShape's fields
        def __init__(self, name, lo, opt, hi):
            self.name, self.min, self.opt, self.max = name, lo, opt, hi

    got = profile_options([P("a", (1, 3), (2, 3), (8, 3)), P("b", (1,), (1,), (4,))])
    assert got == {"trt_profile_min_shapes": "a:1x3,b:1", "trt_profile_opt_shapes": "a:2x3,b:1",
                   "trt_profile_max_shapes": "a:8x3,b:4"}
    assert profile_options([]) == {}


def test_fp16_flag_follows_the_graph_file_not_only_the_session(bundle_path):
    graph = _graphs(bundle_path)["encoder.image"]
    fp16 = replace(graph, entry=replace(graph.entry, file="encoders/image.fp16.onnx"))
    assert graph_precision(fp16, "int8-trt") == "fp16" and graph_precision(graph, "fp16") == "fp32"
    assert fp16_options("fp16") == fp16_options("int8-fp16-trt") == {"trt_fp16_enable": True}
    assert fp16_options("fp32") == fp16_options("int8-trt") == fp16_options("int8") == {}
    options = graph_options(LoadSettings(bundle_path, "fp32", Path("/unused")), profiles={})
    assert options(fp16) == {"trt_fp16_enable": True} and options(graph) == {}


def test_a_tensorrt_ep_that_did_not_register_is_named(bundle_path, monkeypatch, rng):
    monkeypatch.setattr(OrtTensorRTLoader, "availability", classmethod(lambda cls: None))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        session = Session(bundle_path, backend="ort-trt", threads=1)
    with session:
        assert f"{EP} did not register" in session.backend_reason and "libnvinfer" in session.backend_reason
        session.predict(image=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), text="seven")
