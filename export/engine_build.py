"""``mmedge build``: TensorRT engines from a bundle's own precision graphs, on the device.

Each engine is a **strongly typed** network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``)
parsed from the bundle graph of its precision: FP16 from the fp16 graph, INT8 from the explicit
s8 Q/DQ of ``int8-trt`` / ``int8-fp16-trt``. No ``BuilderFlag.FP16/INT8``, no calibrator, no
``EXPLICIT_BATCH``: those are gone in TensorRT 11, and this path runs on 10.x (JetPack) and 11.x
alike (``tests/export/test_trt_api.py`` checks every TensorRT name used here against the
10.3, 10.13 and 11.4 bindings).

One optimization profile per engine covers every dynamic axis (``engine_profiles``); one timing
cache per device key is shared by all builds and kept across runs; engines and their build
records are written atomically (``trt_engines.write_engine``). TensorRT is imported lazily:
without it, ``build_engines`` raises ``BackendUnavailable``. Never imports torch or onnx.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mmedge import __version__
from mmedge.atomic import atomic_write
from mmedge.errors import BackendUnavailable, EngineBuildError
from mmedge.export.engine_config import (BuildConfig, BuildJob, engine_root, plan_jobs, select_precisions,
                                         workspace_bytes)
from mmedge.export.engine_profiles import component_profiles, profiles_to_dict
from mmedge.runtime.backends.trt_cuda import cuda_check
from mmedge.runtime.backends.trt_engines import (TIMING_CACHE, BuildRecord, DeviceIdentity, load_tensorrt, probe_device,
                                                 tensorrt_logger, write_engine)
from mmedge.runtime.bundle import Bundle

__all__ = ["BuildResult", "BuildReport", "build_engines", "ensure_engines", "require_tensorrt"]


@dataclass(frozen=True)
class BuildResult:
    """One engine of a build: built now, or found up to date.

    Attributes:
        job: What was planned.
        built: True if built by this run (False: up to date, left as is).
        seconds: Build time (0 when up to date).
        engine_bytes: Size of the engine file.
    """

    job: BuildJob
    built: bool
    seconds: float
    engine_bytes: int


@dataclass(frozen=True)
class BuildReport:
    """The outcome of ``build_engines``."""

    device: DeviceIdentity
    root: Path
    precisions: tuple[str, ...]
    workspace_bytes: int
    results: tuple[BuildResult, ...]
    timing_cache: Path


Listener = Callable[[str, BuildJob, "BuildResult | None"], None]  # ("start" | "done", job, result)


def require_tensorrt(bundle: str | Path = "BUNDLE") -> None:
    """Raises ``BackendUnavailable`` unless TensorRT, cuda-python and a GPU are here, saying
    what is missing, how to install it, and that ONNX Runtime runs the same bundle meanwhile."""
    from mmedge.runtime.backends.trt import EngineLoader

    problem = EngineLoader.availability()
    if problem:
        raise BackendUnavailable(
            f"mmedge build compiles TensorRT engines and needs TensorRT, cuda-python and an NVIDIA GPU: {problem}. "
            f"To install: {EngineLoader.install_hint}. Without TensorRT, the same bundle runs on ONNX Runtime: "
            f"`mmedge run {bundle} ...` or mmedge.runtime.Session({str(bundle)!r}) (backends ort, ort-cuda, ort-trt)")


def _free_memory(cudart: Any) -> int:
    free, _total = cuda_check(cudart, cudart.cudaMemGetInfo(), "cudaMemGetInfo")
    return int(free)


class _Builder:
    """A TensorRT builder, its logger and the shared timing cache of one device key."""

    def __init__(self, trt: Any, cache_file: Path, workspace: int, opt_level: int) -> None:
        self.trt, self.cache_file = trt, cache_file
        self.workspace, self.opt_level = workspace, opt_level
        self.logger = tensorrt_logger(trt)  # TensorRT keeps one logger per process
        self.builder = trt.Builder(self.logger)
        self._cache_owner = self.builder.create_builder_config()  # keeps the timing cache's creator alive
        self.timing_cache = self._load_timing_cache(cache_file)

    def _load_timing_cache(self, cache_file: Path) -> Any:
        seed = cache_file.read_bytes() if cache_file.is_file() else b""
        try:
            cache = self._cache_owner.create_timing_cache(seed)
        except Exception:  # noqa: BLE001 - a corrupt cache file: start from an empty cache
            cache = None
        return cache if cache is not None else self._cache_owner.create_timing_cache(b"")

    def _config(self, network: Any, job: BuildJob) -> Any:
        trt = self.trt
        config = self.builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace)
        config.builder_optimization_level = self.opt_level
        if not config.set_timing_cache(self.timing_cache, False):  # False: refuse a cache from elsewhere
            self.timing_cache = self._cache_owner.create_timing_cache(b"")
            config.set_timing_cache(self.timing_cache, False)
        profile = self.builder.create_optimization_profile()
        shapes = {p.name: p for p in job.profiles}
        for i in range(network.num_inputs):
            name = network.get_input(i).name
            if name not in shapes:
                raise EngineBuildError(f"{job.source_rel} has an input {name!r} the manifest does not list "
                                       f"({sorted(shapes)}); re-export the bundle")
            profile.set_shape(name, shapes[name].min, shapes[name].opt, shapes[name].max)
        config.add_optimization_profile(profile)
        return config

    def _network(self, job: BuildJob) -> tuple[Any, Any]:
        trt = self.trt
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = self.builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(job.source)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineBuildError(f"TensorRT {trt.__version__}'s ONNX parser rejected {job.source_rel} "
                                   f"({job.component}, {'/'.join(job.precisions)}): {errors}. Build another "
                                   "precision, or run this one with `mmedge run --backend ort`")
        return network, parser  # the parser must outlive the network's use

    def build(self, job: BuildJob) -> tuple[bytes, float]:
        """The serialized engine of ``job`` and the build seconds."""
        network, _parser = self._network(job)
        config = self._config(network, job)
        start = time.perf_counter()
        serialized = self.builder.build_serialized_network(network, config)
        seconds = time.perf_counter() - start
        if serialized is None:
            raise EngineBuildError(f"TensorRT {self.trt.__version__} failed to build {job.source_rel} "
                                   f"({job.component}); see the TensorRT log above. A larger --workspace or a "
                                   "lower --opt-level may help")
        return bytes(serialized), seconds

    def save_timing_cache(self) -> None:
        """Writes the shared timing cache back (atomically), for the next build on this device."""
        atomic_write(self.cache_file, bytes(self.timing_cache.serialize()))


def _record(job: BuildJob, here: DeviceIdentity, size: int, seconds: float, compiler: _Builder) -> BuildRecord:
    return BuildRecord(here, job.component, job.precisions[0], job.source_rel, job.source_sha256,
                       profiles_to_dict(job.profiles), size, round(seconds, 3), compiler.workspace,
                       compiler.opt_level, __version__, {"serves_precisions": list(job.precisions)})


def _run_job(compiler: _Builder, job: BuildJob, here: DeviceIdentity, on_event: Listener) -> BuildResult:
    on_event("start", job, None)
    if job.stale is None:
        result = BuildResult(job, False, 0.0, job.engine.stat().st_size)
    else:
        data, seconds = compiler.build(job)
        write_engine(job.engine, data, _record(job, here, len(data), seconds, compiler))
        result = BuildResult(job, True, seconds, len(data))
    on_event("done", job, result)
    return result


def build_engines(bundle: Bundle | str | Path, settings: BuildConfig = BuildConfig(), *,
                  components: Sequence[str] | None = None, on_event: Listener | None = None,
                  keep_fitting: bool = False) -> BuildReport:
    """Builds (or finds up to date) the TensorRT engines of a bundle on this device.

    Args:
        bundle: A ``Bundle`` or a bundle folder / ``.mmedge`` file.
        settings: Precisions, batch range, workspace, optimization level, engine root, force.
        components: Only these components (None: all).
        on_event: Called with ``("start" | "done", job, result)`` around each engine (progress display).
        keep_fitting: Keep an engine that fits this device and graph even if it was built with
            other profiles (``auto_build``: never narrow a user's ``--max-batch``).

    Returns:
        What was built, where, and how long each took.

    Raises:
        BackendUnavailable: TensorRT or cuda-python is missing (``mmedge run`` / ``Session``
            still run the bundle on ONNX Runtime).
        ConfigError / BundleError: bad settings or precisions the bundle lacks.
        EngineBuildError: TensorRT rejected a graph or failed to build it.
    """
    require_tensorrt(bundle.source if isinstance(bundle, Bundle) else bundle)
    trt, cudart = load_tensorrt()
    opened = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    try:
        return _build(trt, cudart, opened, settings, components, on_event or (lambda *_: None), keep_fitting)
    finally:
        if opened is not bundle:
            opened.close()


def _build(trt: Any, cudart: Any, bundle: Bundle, settings: BuildConfig, components: Sequence[str] | None,
           on_event: Listener, keep_fitting: bool) -> BuildReport:
    here = probe_device(trt, cudart)
    precisions = select_precisions(bundle, settings.precisions)
    root = engine_root(bundle, settings.engine_dir)
    profiles = component_profiles(bundle, max_batch=settings.max_batch, opt_batch=settings.opt_batch)
    jobs = plan_jobs(bundle, precisions, root=root, here=here, profiles=profiles, components=components,
                     force=settings.force, check_profiles=not keep_fitting)
    workspace = workspace_bytes(settings.workspace_mb, free_bytes=_free_memory(cudart), shared_memory=here.l4t is not None)
    compiler = _Builder(trt, root / here.key / TIMING_CACHE, workspace, settings.opt_level)
    try:
        results = tuple(_run_job(compiler, job, here, on_event) for job in jobs)
    finally:
        if any(job.stale for job in jobs):
            compiler.save_timing_cache()
    return BuildReport(here, root, precisions, workspace, results, compiler.cache_file)


def ensure_engines(bundle: Bundle, precision: str, *, engine_dir: Path | None = None,
                   components: Sequence[str] | None = None) -> BuildReport:
    """Builds the engines of ``precision`` that are missing or stale, with default settings
    (``Session(..., auto_build=True)``)."""
    return build_engines(bundle, BuildConfig(precisions=(precision,), engine_dir=engine_dir), components=components,
                         keep_fitting=True)
