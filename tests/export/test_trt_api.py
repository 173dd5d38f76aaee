"""mmedge's TensorRT code checked against the real Python API of TensorRT 10.3 (JetPack 6),
10.13 and 11.4, without a GPU.

The bindings wheels (about 1 MB each) are downloaded once with pip into a cache
(``$MMEDGE_TRT_BINDINGS_CACHE``, default ``~/.cache/mmedge/trt-bindings``) and never installed:
their ``tensorrt_bindings/tensorrt.so`` cannot load without the TensorRT libraries, but its string
table holds every Python name of that version (class, enum member, method, property), and
``tensorrt_bindings/__init__.py`` the pure-Python ones (``nptype``, ``__version__``).

Every TensorRT name that the builder (``export/engine_build.py``) and the runner
(``runtime/backends/trt.py``, ``trt_engines.py``) use is collected from their source (AST) and
looked up in each version. A missing name fails the test, naming the version and the line.
No network: the test fails loudly; ``MMEDGE_OFFLINE=1`` turns that into a skip with the reason.

How names are found in the binary: pybind11 names are NUL-terminated strings, and the linker
may store one as the tail of a longer string ("serialize" inside "deserialize"). A name counts as
present when a string equals it or ends with it right after an identifier character; a sentence
that merely ends with the word ("... CHW2 + FP16") does not count.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile
from functools import lru_cache
from pathlib import Path

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
# Variables (or self.<attr>) that hold TensorRT objects in those modules; attributes read or set on
# them are TensorRT API names. (The modules keep this naming; a BuildConfig is ``settings``.)
TRT_OBJECTS = frozenset({"builder", "network", "config", "profile", "parser", "engine", "context", "runtime",
                         "logger", "timing_cache", "serialized", "_cache_owner", "_engine", "_context", "_runtime",
                         "_logger"})
TRT_MODULE = frozenset({"trt", "_trt"})  # ``trt.X`` / ``self._trt.X``
CORE_API = {"NetworkDefinitionCreationFlag", "STRONGLY_TYPED", "OnnxParser", "parse_from_file", "MemoryPoolType",
            "WORKSPACE", "set_memory_pool_limit", "builder_optimization_level", "create_optimization_profile",
            "set_shape", "add_optimization_profile", "create_timing_cache", "set_timing_cache", "serialize",
            "build_serialized_network", "deserialize_cuda_engine", "create_execution_context", "set_input_shape",
            "set_tensor_address", "execute_async_v3", "get_tensor_profile_shape", "nptype", "__version__"}
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


def _is_trt_object(node: ast.AST, objects: frozenset[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in objects
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self" \
        and node.attr in objects


def _is_trt_module(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in TRT_MODULE
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self" \
        and node.attr in TRT_MODULE


def _rooted_at_module(node: ast.Attribute) -> bool:
    base = node.value
    while isinstance(base, ast.Attribute) and not _is_trt_module(base):
        base = base.value
    return _is_trt_module(base)


def used_names(source: str, where: str, objects: frozenset[str] = TRT_OBJECTS) -> dict[str, list[str]]:
    """TensorRT API name -> ``["file:line", ...]`` for every ``trt.A.B`` chain and every attribute
    of a TensorRT object (a variable named in ``objects``) in ``source``."""
    found: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and (_is_trt_object(node.value, objects) or _rooted_at_module(node)):
            found.setdefault(node.attr, []).append(f"{where}:{node.lineno}")
    return found


def missing_by_version(used: dict[str, list[str]]) -> dict[str, list[str]]:
    """TensorRT version -> the used names it lacks, each with where it is used."""
    report = {}
    for version in WHEELS:
        names = _names(version)
        missing = [f"{n} ({', '.join(used[n][:3])})" for n in sorted(used) if n not in names]
        if missing:
            report[version] = missing
    return report


def _mmedge_trt_names() -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for rel, holds_objects in TRT_SOURCES.items():
        objects = TRT_OBJECTS if holds_objects else frozenset()
        for name, places in used_names((ROOT / rel).read_text(encoding="utf-8"), rel, objects).items():
            used.setdefault(name, []).extend(places)
    return used


def test_collector_sees_the_whole_tensorrt_path():
    """The AST walk is a heuristic (naming convention): if it went blind, the API check would pass
    vacuously. It must at least see the core of the build and run path."""
    used = _mmedge_trt_names()
    assert CORE_API <= set(used), sorted(CORE_API - set(used))
    assert "BuilderFlag" not in used and "EXPLICIT_BATCH" not in used and "int8_calibrator" not in used


def test_binding_names_reflect_the_removal_of_weak_typing():
    weak = ("FP16", "EXPLICIT_BATCH", "int8_calibrator", "platform_has_fast_fp16")
    for version in ("10.3.0", "10.13.3.9"):
        names = _names(version)
        assert [n for n in (*weak, "STRONGLY_TYPED", "nptype") if n not in names] == [], version
    eleven = _names("11.4.0.106")
    assert "STRONGLY_TYPED" in eleven and "nptype" in eleven and "__version__" in eleven
    assert [n for n in weak if n in eleven] == []
    assert "NoSuchTensorRTName" not in eleven


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
    for name in ("EXPLICIT_BATCH (snippet.py:2)", "FP16 (snippet.py:3)", "int8_calibrator (snippet.py:4)"):
        assert name in lacking, name
