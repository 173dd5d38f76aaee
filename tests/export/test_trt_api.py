"""mmedge's TensorRT code checked against the real Python API of TensorRT 10.3 (JetPack 6),
10.13 and 11.4, class by class, without a GPU.

Two sources, both required for a name to count:

- the class tables of ``tests/export/data/tensorrt_api.json`` (written by
  ``tests/export/trt_api_tables.py`` from the pybind11 binding sources of each version in NVIDIA's
  TensorRT repository): ``context.execute_async_v3`` must be a name bound on ``IExecutionContext``,
  not merely some name of the module;
- the strings of the real bindings binary of that version. The wheels (about 1 MB each) are
  downloaded once with pip into a cache (``$MMEDGE_TRT_BINDINGS_CACHE``, default
  ``~/.cache/mmedge/trt-bindings``) and never installed: their ``tensorrt_bindings/tensorrt.so``
  cannot load without the TensorRT libraries, but its string table holds every Python name of
  that version, and ``tensorrt_bindings/__init__.py`` the pure-Python ones (``nptype``). This
  guards against a stale table (11.4's bindings sources are not public: the newest 11.x stand in).

Which class an object has follows the modules' naming (``TRT_OBJECTS``: ``context`` is an
``IExecutionContext``...); ``trt.A.B`` chains are looked up as member ``B`` of class ``A``.
No network: the test fails loudly; ``MMEDGE_OFFLINE=1`` turns that into a skip with the reason.

How names are found in the binary: pybind11 names are NUL-terminated strings, and the linker
may store one as the tail of a longer string ("serialize" inside "deserialize"). A name counts as
present when a string equals it or ends with it right after an identifier character; a sentence
that merely ends with the word ("... CHW2 + FP16") does not count.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import pytest

ROOT = Path(__file__).resolve().parents[2]
WHEELS = {  # TensorRT version -> pip requirement of its bindings-only wheel
    "10.3.0": "tensorrt-cu12-bindings==10.3.0",  # JetPack 6
    "10.13.3.9": "tensorrt-cu12-bindings==10.13.3.9",
    "11.4.0.106": "tensorrt-cu13-bindings==11.4.0.106",  # weak typing removed
}
# Module -> whether it holds TensorRT objects (trt_engines.py only reads ``trt.__version__``; its
# ``engine`` variables are paths).
TRT_SOURCES = {"export/engine_build.py": True, "runtime/backends/trt.py": True, "runtime/backends/trt_engines.py": False}
# Variables (or self.<attr>) that hold TensorRT objects in those modules -> their TensorRT class;
# attributes read or set on them are that class's API. (The modules keep this naming.)
TRT_OBJECTS = {"builder": "Builder", "network": "INetworkDefinition", "config": "IBuilderConfig",
               "_cache_owner": "IBuilderConfig", "profile": "IOptimizationProfile", "parser": "OnnxParser",
               "engine": "ICudaEngine", "_engine": "ICudaEngine", "context": "IExecutionContext",
               "_context": "IExecutionContext", "runtime": "Runtime", "_runtime": "Runtime", "logger": "Logger",
               "_logger": "Logger", "timing_cache": "ITimingCache", "serialized": "IHostMemory"}
TRT_MODULE = frozenset({"trt", "_trt"})  # ``trt.X`` / ``self._trt.X``
MODULE = "<module>"
CORE_API = {("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"), (MODULE, "OnnxParser"),
            ("OnnxParser", "parse_from_file"), ("MemoryPoolType", "WORKSPACE"),
            ("IBuilderConfig", "set_memory_pool_limit"), ("IBuilderConfig", "builder_optimization_level"),
            ("Builder", "create_optimization_profile"), ("IOptimizationProfile", "set_shape"),
            ("IBuilderConfig", "add_optimization_profile"), ("IBuilderConfig", "create_timing_cache"),
            ("IBuilderConfig", "set_timing_cache"), ("ITimingCache", "serialize"),
            ("Builder", "build_serialized_network"), ("Runtime", "deserialize_cuda_engine"),
            ("ICudaEngine", "create_execution_context"), ("IExecutionContext", "set_input_shape"),
            ("IExecutionContext", "set_tensor_address"), ("IExecutionContext", "execute_async_v3"),
            ("ICudaEngine", "get_tensor_profile_shape"), (MODULE, "nptype"), (MODULE, "__version__"),
            ("Logger", "WARNING")}
TABLES = Path(__file__).with_name("data") / "tensorrt_api.json"
_STRINGS = re.compile(rb"[\x20-\x7e]{2,}")


def _cache_dir() -> Path:
    default = Path.home() / ".cache" / "mmedge" / "trt-bindings"
    path = Path(os.environ.get("MMEDGE_TRT_BINDINGS_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _wheel(requirement: str) -> Path:
    """The cached wheel of ``requirement``, downloaded with pip (no install) when missing."""
    name, version = requirement.split("==")
    cache = _cache_dir()
    found = sorted(cache.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
           "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64", "-d", str(cache), requirement]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        ok, log = out.returncode == 0, out.stderr[-2000:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        ok, log = False, str(exc)
    found = sorted(cache.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if ok and found:
        return found[0]
    why = f"cannot download {requirement} with pip ({' '.join(cmd)}):\n{log}"
    if os.environ.get("MMEDGE_OFFLINE") == "1":
        pytest.skip(f"MMEDGE_OFFLINE=1: the TensorRT API check needs the bindings wheels; {why}")
    pytest.fail(f"the TensorRT API check needs the bindings wheels from PyPI; {why}\nSet MMEDGE_OFFLINE=1 to skip "
                "it on a machine without network (CI has network and must run it).")


class BindingNames:
    """The Python API names of one TensorRT version, read from its bindings wheel."""

    def __init__(self, wheel: Path) -> None:
        with zipfile.ZipFile(wheel) as zf:
            blob = zf.read("tensorrt_bindings/tensorrt.so")
            init = zf.read("tensorrt_bindings/__init__.py").decode()
        self.strings = [s.decode() for s in set(_STRINGS.findall(blob))]
        self.exact = set(self.strings)
        tree = ast.parse(init)
        self.python = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | \
                      {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}

    def __contains__(self, name: str) -> bool:
        if name in self.exact or name in self.python:
            return True
        return any(s.endswith(name) and len(s) > len(name) and (s[-len(name) - 1].isalnum() or s[-len(name) - 1] == "_")
                   for s in self.strings)


@lru_cache(maxsize=None)
def _names(version: str) -> BindingNames:
    return BindingNames(_wheel(WHEELS[version]))


@lru_cache(maxsize=None)
def _tables() -> dict[str, dict[str, frozenset[str]]]:
    raw = json.loads(TABLES.read_text(encoding="utf-8"))["tables"]
    return {version: {cls: frozenset(names) for cls, names in table.items()} for version, table in raw.items()}


def _object_class(node: ast.AST, objects: Mapping[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return objects.get(node.id)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return objects.get(node.attr)
    return None


def _is_trt_module(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in TRT_MODULE
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self" \
        and node.attr in TRT_MODULE


def _module_owner(node: ast.Attribute) -> str | None:
    """For ``trt.A`` -> ``<module>``; ``trt.A.B`` -> ``A``; None when not rooted at the module."""
    if _is_trt_module(node.value):
        return MODULE
    if isinstance(node.value, ast.Attribute) and _is_trt_module(node.value.value):
        return node.value.attr
    return None


Used = dict[tuple[str, str], list[str]]


def used_names(source: str, where: str, objects: Mapping[str, str] = TRT_OBJECTS) -> Used:
    """(TensorRT class, name) -> ``["file:line", ...]`` for every ``trt.A`` / ``trt.A.B`` and every
    attribute of a TensorRT object (a variable named in ``objects``) in ``source``."""
    found: Used = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        owner = _object_class(node.value, objects) or _module_owner(node)
        if owner is not None:
            found.setdefault((owner, node.attr), []).append(f"{where}:{node.lineno}")
    return found


def lacks(version: str, owner: str, name: str) -> bool:
    """Whether TensorRT ``version`` lacks ``name`` on class ``owner`` (or at module level)."""
    table, binary = _tables()[version], _names(version)
    if owner == MODULE:
        bound = name in table or name in table[MODULE] or name in binary.python
    else:
        bound = name in table.get(owner, ())
    return not (bound and name in binary)


def missing_by_version(used: Used) -> dict[str, list[str]]:
    """TensorRT version -> the used names it lacks (``Class.name``), each with where it is used."""
    report = {}
    for version in WHEELS:
        missing = [f"{owner}.{name} ({', '.join(used[(owner, name)][:3])})" for owner, name in sorted(used)
                   if lacks(version, owner, name)]
        if missing:
            report[version] = missing
    return report


def _mmedge_trt_names() -> Used:
    used: Used = {}
    for rel, holds_objects in TRT_SOURCES.items():
        objects = TRT_OBJECTS if holds_objects else {}
        for key, places in used_names((ROOT / rel).read_text(encoding="utf-8"), rel, objects).items():
            used.setdefault(key, []).extend(places)
    return used


def test_collector_sees_the_whole_tensorrt_path():
    """The AST walk is a heuristic (naming convention): if it went blind, the API check would pass
    vacuously. It must at least see the core of the build and run path, each on its class."""
    used = _mmedge_trt_names()
    assert CORE_API <= set(used), sorted(CORE_API - set(used))
    names = {name for _, name in used}
    assert "BuilderFlag" not in names and "EXPLICIT_BATCH" not in names and "int8_calibrator" not in names


def test_tables_match_the_binaries_and_reflect_the_removal_of_weak_typing():
    weak = [("BuilderFlag", "FP16"), ("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"),
            ("IBuilderConfig", "int8_calibrator"), ("Builder", "platform_has_fast_fp16")]
    strong = [("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"), (MODULE, "nptype")]
    for version in ("10.3.0", "10.13.3.9"):
        assert [f"{o}.{n}" for o, n in weak + strong if lacks(version, o, n)] == [], version
    assert [f"{o}.{n}" for o, n in strong if lacks("11.4.0.106", o, n)] == []
    assert [f"{o}.{n}" for o, n in weak if not lacks("11.4.0.106", o, n)] == []
    for version, table in _tables().items():  # the tables hold what mmedge relies on, for every version
        assert len(table) > 150 and "execute_async_v3" in table["IExecutionContext"], version


def test_mmedge_tensorrt_code_uses_only_names_every_version_has():
    report = missing_by_version(_mmedge_trt_names())
    assert not report, "mmedge's TensorRT code uses names some TensorRT versions lack:\n" + "\n".join(
        f"  TensorRT {version} lacks: {', '.join(names)}" for version, names in report.items())


def test_the_check_fails_on_a_name_tensorrt_11_removed():
    snippet = ("import tensorrt as trt\n"
               "network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))\n"
               "config.set_flag(trt.BuilderFlag.FP16)\n"
               "config.int8_calibrator = calibrator\n")
    report = missing_by_version(used_names(snippet, "snippet.py"))
    assert list(report) == ["11.4.0.106"], report
    lacking = " ".join(report["11.4.0.106"])
    for name in ("NetworkDefinitionCreationFlag.EXPLICIT_BATCH (snippet.py:2)", "BuilderFlag.FP16 (snippet.py:3)",
                 "IBuilderConfig.int8_calibrator (snippet.py:4)"):
        assert name in lacking, name


def test_a_name_of_another_class_or_of_a_docstring_does_not_count():
    """The binary-strings check alone passed these: each name is a string of the module, but of
    another class (``deserialize_cuda_engine`` is ``Runtime``'s) or of no class at all (``bindings``
    is only an argument name of ``execute_v2``; ``ICudaEngine.bindings`` was TensorRT 8's)."""
    snippet = ("engine = runtime.deserialize_cuda_engine(data)\n"
               "context = engine.create_execution_context()\n"
               "context.deserialize_cuda_engine(data)\n"
               "engine.execute_async_v3(0)\n"
               "engine.bindings\n"
               "x = trt.Logger.STRONGLY_TYPED\n")
    used = used_names(snippet, "s.py")
    for version in WHEELS:
        assert all(name in _names(version) for _, name in used), version  # the old check saw no problem
        report = " ".join(missing_by_version(used)[version])
        assert "Runtime.deserialize_cuda_engine" not in report and "ICudaEngine.create_execution_context" not in report
        for wrong in ("IExecutionContext.deserialize_cuda_engine (s.py:3)", "ICudaEngine.execute_async_v3 (s.py:4)",
                      "ICudaEngine.bindings (s.py:5)", "Logger.STRONGLY_TYPED (s.py:6)"):
            assert wrong in report, (version, wrong)


def test_tensorrt_extras_resolve_to_one_cuda_major_each():
    """``[tensorrt-cu12]``: TensorRT 10 (what onnxruntime-gpu's TensorRT EP links) with cuda-python 12;
    ``[tensorrt-cu13]``: TensorRT 11 with cuda-python 13; ``[tensorrt]`` is the CUDA 12 set."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert extras["tensorrt-cu12"] == ["tensorrt-cu12>=10,<11", "cuda-python>=12,<13"]
    assert extras["tensorrt-cu13"] == ["tensorrt-cu13>=11,<12", "cuda-python>=13,<14"]
    assert extras["tensorrt"] == extras["tensorrt-cu12"]
    docs = (ROOT / "docs" / "tensorrt.md").read_text(encoding="utf-8")
    for needed in ("mmedge[tensorrt-cu12]", "mmedge[tensorrt-cu13]", "R580", "JetPack"):
        assert needed in docs, needed
