"""ONNX Runtime's optimized graphs cached on disk, so that a new process skips graph optimization.

ONNX Runtime optimizes every graph each time a session is created (``ORT_ENABLE_ALL``: constant
folding, fusions, NCHWc layouts, int8 kernel selection). Its result depends on the graph, the
ONNX Runtime version, the CPU (NCHWc block sizes follow the vector width) and the optimizers left
off; it does not depend on the inputs. So the ``ort`` backend writes the optimized graph of each
bundle graph once (``SessionOptions.optimized_model_filepath``) and later sessions load that file
with optimization off. Measured on the reference int8 bundle (7 graphs, 2 cores, interleaved):
creating the sessions took 276 ms from the bundle's graphs and 143 ms from the cache, with
bit-identical outputs and the same steady-state latency (``python benchmarks/startup.py``).

An entry is a folder: the optimized graph (``GRAPH_FILE``) and its weights beside it
(``WEIGHTS_FILE``, ONNX external data: every initializer of ``EXTERNAL_MIN_BYTES`` or more). ONNX
Runtime reads external weights straight into its tensors, where weights inside the graph file are
parsed into a protobuf and copied out of it. ``python benchmarks/startup.py`` on the reference
bundle (2 cores): a fresh int8 process held 110 MiB after loading from a warm cache and 131 MiB with
the cache off, where entries with the weights inside the graph file saved 3 MiB (128 / 131 MiB, the
2026-12-03 run); the int8 text encoder's session opens from the cache in 23 ms; outputs are
bit-identical (``tests/runtime/test_ort_cache.py``). An entry is written in a temporary sibling
folder and swapped in whole (``mmedge.atomic.replace_dir``), so a reader never sees a graph without
its weights.

Where: ``<engine_dir>/onnxruntime-cache`` when the Session's engine root is outside the bundle,
else mmedge's user cache (``cache_root()/onnxruntime``), because a Session never writes into a
bundle folder. Entries are named by a hash of everything the optimized graph depends on (the
graph's sha256 from the manifest, the optimizers left off, ONNX Runtime's version, the CPU, which
also decides the session options, such as ``ort.EXACT_INT8_OPTION``; ``_FORMAT`` when those change), so
one cache serves every bundle, and a changed graph or upgrade is a new entry, never a stale one.
A location that cannot be written just runs without the cache; an entry ONNX Runtime cannot
load is ignored and written again. ``MMEDGE_ORT_CACHE=0`` in the environment turns the cache off
(every session optimizes its graph, as before the cache; the benchmark's comparison uses it).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Sequence

from mmedge.atomic import make_temp_dir, replace_dir, sweep_stale
from mmedge.runtime.backends.base import GraphRef, LoadSettings
from mmedge.runtime.cpu import cpuinfo

__all__ = ["CACHE_FOLDER", "GRAPH_FILE", "WEIGHTS_FILE", "EXTERNAL_MIN_BYTES", "OFF_VARIABLE", "cache_folder",
           "cache_entry", "cpu_fingerprint", "publish", "commit"]

CACHE_FOLDER = "onnxruntime-cache"
_FORMAT = 3  # bump when what an entry holds changes (2: session.x64quantprecision where int8 saturates;
# 3: a folder, weights as external data)
GRAPH_FILE = "graph.onnx"
WEIGHTS_FILE = "weights.data"  # named in the graph, relative to it
EXTERNAL_MIN_BYTES = 1024  # smaller initializers stay inside the graph file
OFF_VARIABLE = "MMEDGE_ORT_CACHE"  # "0": no cache


def cache_folder(settings: LoadSettings) -> Path:
    """Where a Session's optimized graphs go (``LoadSettings.cache_folder``: ``<engine_dir>/onnxruntime-cache``,
    or ``cache_root()/onnxruntime`` when the engine root is inside the bundle folder)."""
    return settings.cache_folder("onnxruntime")


@functools.lru_cache(maxsize=1)
def cpu_fingerprint() -> str:
    """The machine and its CPU's model and feature flags (what ONNX Runtime's kernels and layouts
    are chosen by); on systems without ``/proc/cpuinfo``, ``platform.processor()``."""
    info = cpuinfo()
    found = {k: v for k, v in info.items() if k in ("model name", "flags", "Features", "CPU part")} if info \
        else {"processor": platform.processor()}
    return json.dumps([platform.machine(), sorted(found.items())])


def cache_entry(settings: LoadSettings, graph: GraphRef, disabled_optimizers: Sequence[str]) -> Path | None:
    """The cache entry folder for ``graph`` in this Session (None: the manifest gives no sha256 to name it
    by, or ``MMEDGE_ORT_CACHE=0``). ONNX Runtime loads ``<entry>/GRAPH_FILE``."""
    sha = graph.entry.sha256
    if not sha or os.environ.get(OFF_VARIABLE, "1") == "0":
        return None
    import onnxruntime as ort

    payload = json.dumps([_FORMAT, sha, sorted(disabled_optimizers), ort.__version__, cpu_fingerprint()])
    return cache_folder(settings) / hashlib.sha256(payload.encode()).hexdigest()[:32]


def publish(entry: Path) -> Path | None:
    """A new temporary sibling folder of ``entry`` for ONNX Runtime to write ``GRAPH_FILE`` and
    ``WEIGHTS_FILE`` into, or None when it cannot be created (a read-only or blocked location).
    Temporary folders that killed writers left for this entry are removed first."""
    try:
        if entry.parent.is_dir():
            sweep_stale(entry)
        return make_temp_dir(entry)
    except OSError:
        return None


def commit(written: Path, entry: Path) -> None:
    """Makes the folder ``publish`` gave, once ONNX Runtime wrote the graph into it, the entry (replacing a
    damaged one); a failure (another process's entry in use, a full disk) leaves the Session running."""
    if (written / GRAPH_FILE).is_file():
        with contextlib.suppress(OSError):
            replace_dir(written, entry)
    shutil.rmtree(written, ignore_errors=True)
