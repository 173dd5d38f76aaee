"""The options of ONNX Runtime's TensorRT execution provider (backend ``ort-trt``).

- engine and timing caches in this device's folder of the engine root, created with its
  parents first (the EP creates only the last folder: without its parents it fails to register
  and ONNX Runtime quietly runs the graph on the CUDA EP);
- explicit optimization profiles (``trt_profile_min_shapes`` / ``_opt_`` / ``_max_``, in the
  EP's ``name:1x3x224x224,other:...`` form) from the bundle's manifest, the same ranges
  ``mmedge build`` gives TensorRT engines, so the EP builds one engine per graph instead of
  rebuilding when the batch or the token count changes;
- ``trt_fp16_enable`` for a float16 graph: the EP builds weakly typed networks, and without
  the flag it runs a float16 graph's layers in float32.

The profile of a fusion head follows from its encoder's output shapes, which are measured once
per Session by running the encoder on ONNX Runtime (CPU), like ``mmedge build`` does.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mmedge.errors import BundleError, ConfigError
from mmedge.runtime.backends.base import GraphRef, LoadSettings
from mmedge.runtime.precisions import PRECISIONS

__all__ = ["DEFAULT_MAX_BATCH", "cache_options", "profile_options", "graph_precision", "fp16_options",
           "graph_options"]

DEFAULT_MAX_BATCH = 8  # the batch range of the profiles, as `mmedge build`'s default --max-batch


def cache_options(engine_dir: Path) -> dict[str, Any]:
    """The EP's engine and timing cache options; the cache folder exists afterwards.

    A folder that cannot be created (a read-only bundle) leaves the caches off, with a warning
    naming it: the EP then builds its engines at every start instead of failing to register.
    """
    from mmedge.runtime.backends.trt_engines import ort_trt_cache_dir

    cache = ort_trt_cache_dir(engine_dir)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        warnings.warn(f"mmedge: ONNX Runtime's TensorRT caches stay off: cannot create {cache} ({exc}); pass a "
                      "writable engine_dir to keep them", RuntimeWarning, stacklevel=3)
        return {}
    return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}


def profile_options(profiles: Sequence[Any]) -> dict[str, str]:
    """``trt_profile_{min,opt,max}_shapes`` of one graph from its ``ProfileShape``s (none: {})."""
    if not profiles:
        return {}
    return {f"trt_profile_{which}_shapes": ",".join(f"{p.name}:{'x'.join(str(int(d)) for d in getattr(p, which))}"
                                                    for p in profiles)
            for which in ("min", "opt", "max")}


def graph_precision(graph: GraphRef, default: str) -> str:
    """The precision of the graph file itself (``encoders/image.fp16.onnx`` -> ``fp16``): a graph
    that fell back to another precision's graph, or one ``mixed`` selected, says which it is."""
    parts = Path(graph.entry.file or graph.path).name.split(".")
    return parts[-2] if len(parts) >= 3 and parts[-2] in PRECISIONS else default


def fp16_options(precision: str) -> dict[str, Any]:
    """``{"trt_fp16_enable": True}`` for a float16 graph's precision, else {}."""
    build = PRECISIONS[precision].tensorrt if precision in PRECISIONS else None
    return {"trt_fp16_enable": True} if build is not None and build.float16 else {}


def _bundle_profiles(settings: LoadSettings, max_batch: int) -> Mapping[str, Sequence[Any]]:
    """Component -> its inputs' profiles; {} (the EP's own profiles) when the bundle's axes cannot be told."""
    from mmedge.export.engine_profiles import component_profiles  # numpy + onnxruntime only
    from mmedge.runtime.bundle import Bundle

    try:
        with Bundle.open(settings.bundle_source) as bundle:
            return component_profiles(bundle, max_batch=max_batch)
    except (BundleError, ConfigError) as exc:
        warnings.warn(f"mmedge: ONNX Runtime's TensorRT EP gets no explicit profiles for {settings.bundle_source} "
                      f"({exc}); it rebuilds an engine whenever an input shape leaves the range it saw",
                      RuntimeWarning, stacklevel=3)
        return {}


def graph_options(settings: LoadSettings, *, max_batch: int = DEFAULT_MAX_BATCH,
                  profiles: Mapping[str, Sequence[Any]] | None = None) -> Callable[[GraphRef], dict[str, Any]]:
    """Graph -> its profile and fp16 options (the profiles are measured once, at the first graph).

    Args:
        settings: The Session's settings (bundle, precision).
        max_batch: The largest batch of the profiles.
        profiles: Component -> profiles, when already known (None: from the bundle).
    """
    known: dict[str, Mapping[str, Sequence[Any]]] = {} if profiles is None else {"all": profiles}

    def options(graph: GraphRef) -> dict[str, Any]:
        if "all" not in known:
            known["all"] = _bundle_profiles(settings, max_batch)
        return {**profile_options(known["all"].get(graph.component, ())),
                **fp16_options(graph_precision(graph, settings.precision))}

    return options
