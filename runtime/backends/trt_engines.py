"""TensorRT engine cache: device keys, engine locations, build records, atomic writes.

Shared by the builder (``mmedge.export.engine_build``) and the runtime
(``mmedge.runtime.backends.trt``); importable without torch, onnx or TensorRT (the
``tensorrt`` and cuda-python modules are imported lazily, by ``load_tensorrt`` only).

An engine only runs where it was built: same TensorRT version, same GPU (name and
compute capability) and, on a Jetson, the same L4T release. ``DeviceIdentity.key`` names
that combination, and engines live under ``<engine_root>/<key>/``::

    <bundle>/engines/trt10.3.0_orin_sm87_l4t36.3.0/encoders/image.fp16.engine
                                                  /encoders/image.fp16.engine.json  (build record)
                                                  /timing.cache
    <bundle>/engines/trt10.13.3.9_nvidia-geforce-rtx-4090_sm89/...

so one bundle can carry engines for several device types.
"""
from __future__ import annotations

import json
import re
import threading
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from mmedge.atomic import atomic_write
from mmedge.errors import BackendUnavailable, CudaError, EngineMismatch
from mmedge.runtime.backends.trt_cuda import EXTRAS_HINT, cuda_check, load_cudart, probe_gpu

__all__ = ["DeviceIdentity", "BuildRecord", "RECORD_FORMAT", "ENGINE_SUFFIX", "RECORD_SUFFIX", "TIMING_CACHE",
           "L4T_RELEASE_FILE", "INSTALL_HINT", "parse_l4t_release", "read_l4t_release", "default_engine_root",
           "engine_file", "ort_trt_cache_dir", "record_file", "read_record", "record_problems", "check_engine",
           "missing_engine_error", "rebuild_hint", "write_engine", "load_tensorrt", "load_cudart",
           "cuda_check", "current_device", "probe_device", "probe_gpu", "tensorrt_logger"]

ENGINE_SUFFIX = ".engine"
RECORD_SUFFIX = ".engine.json"
TIMING_CACHE = "timing.cache"
RECORD_FORMAT = "mmedge.engine-record/1"
L4T_RELEASE_FILE = Path("/etc/nv_tegra_release")
INSTALL_HINT = (f"on a machine with an NVIDIA GPU, {EXTRAS_HINT}; on a Jetson use JetPack's TensorRT "
                "(apt install python3-libnvinfer) and pip install 'cuda-python>=12,<13'")
_IDENTITY_FIELDS = ("tensorrt", "gpu", "compute_capability", "l4t")
_L4T = re.compile(r"R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")


@dataclass(frozen=True)
class DeviceIdentity:
    """What an engine is specific to.

    Attributes:
        tensorrt: TensorRT version (``tensorrt.__version__``), e.g. ``"10.3.0"``.
        gpu: GPU name as CUDA reports it, e.g. ``"Orin"``.
        compute_capability: ``"major.minor"``, e.g. ``"8.7"``.
        l4t: Jetson L4T release (``/etc/nv_tegra_release``), e.g. ``"36.3.0"``; None off Jetson.
    """

    tensorrt: str
    gpu: str
    compute_capability: str
    l4t: str | None = None

    @property
    def key(self) -> str:
        """The engine folder name, e.g. ``trt10.3.0_orin_sm87_l4t36.3.0``."""
        return f"trt{self.tensorrt}_{_gpu_key(self.gpu, self.compute_capability, self.l4t)}"

    def describe(self) -> str:
        """E.g. ``TensorRT 10.3.0 on Orin (compute capability 8.7, L4T 36.3.0)``."""
        l4t = f", L4T {self.l4t}" if self.l4t else ""
        return f"TensorRT {self.tensorrt} on {self.gpu} (compute capability {self.compute_capability}{l4t})"


@dataclass(frozen=True)
class BuildRecord:
    """The JSON written next to every engine (``<engine>.json``).

    Attributes:
        device: Where the engine was built (and so where it runs).
        component: ``encoder.image``, ``head.concat``...
        precision: The bundle precision the engine was built for.
        source_file: The bundle graph it was built from (bundle-relative).
        source_sha256: That graph's sha256; the runtime refuses a record without it.
        profiles: Input name -> ``{"min": [...], "opt": [...], "max": [...]}``.
        engine_bytes: Size of the engine file (a torn engine/record pair is refused).
        build_seconds: Wall time of ``build_serialized_network``.
        workspace_bytes: The builder's workspace limit.
        opt_level: ``builder_optimization_level``.
        mmedge: The mmedge version that built it.
    """

    device: DeviceIdentity
    component: str
    precision: str
    source_file: str
    source_sha256: str
    profiles: Mapping[str, Mapping[str, list[int]]]
    engine_bytes: int
    build_seconds: float
    workspace_bytes: int
    opt_level: int
    mmedge: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The record as written to disk."""
        body = {"format": RECORD_FORMAT, **asdict(self.device)}
        body.update({k: v for k, v in asdict(self).items() if k not in ("device", "extra")}, **self.extra)
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, *, where: Path, hint: str) -> "BuildRecord":
        """Parses a record; a malformed one is an ``EngineMismatch`` that says to rebuild."""
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise EngineMismatch(f"build record {where} is not valid JSON ({exc}); the build was probably cut "
                                 f"short: {hint}") from None
        if not isinstance(raw, dict):
            raise EngineMismatch(f"build record {where} must hold a JSON object; {hint}")
        if not raw.get("source_sha256"):
            raise EngineMismatch(f"build record {where} does not say which graph the engine was built from "
                                 f"(no source_sha256), so it cannot be trusted; {hint}")
        try:
            device = DeviceIdentity(str(raw["tensorrt"]), str(raw["gpu"]), str(raw["compute_capability"]),
                                    None if raw.get("l4t") is None else str(raw["l4t"]))
            return cls(device, str(raw["component"]), str(raw["precision"]), str(raw["source_file"]),
                       str(raw["source_sha256"]), dict(raw["profiles"]), int(raw["engine_bytes"]),
                       float(raw["build_seconds"]), int(raw["workspace_bytes"]), int(raw["opt_level"]),
                       str(raw.get("mmedge", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineMismatch(f"build record {where} is incomplete or malformed ({type(exc).__name__}: {exc}); "
                                 f"{hint}") from None


# -- device identity -----------------------------------------------------------------------


def _gpu_key(gpu: str, capability: str, l4t: str | None) -> str:
    """``orin_sm87_l4t36.3.0``: the GPU part of a device key."""
    parts = [re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") or "gpu", "sm" + capability.replace(".", "")]
    return "_".join(parts + ([f"l4t{l4t}"] if l4t else []))


def parse_l4t_release(text: str) -> str | None:
    """``"# R36 (release), REVISION: 3.0, ..."`` -> ``"36.3.0"``; None if it is not an L4T release line."""
    match = _L4T.search(text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def read_l4t_release(path: Path = L4T_RELEASE_FILE) -> str | None:
    """The Jetson L4T release, or None when ``path`` does not exist (not a Jetson)."""
    try:
        return parse_l4t_release(Path(path).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def load_tensorrt() -> tuple[Any, Any]:
    """Imports ``tensorrt`` and cuda-python's runtime module (``cudart``).

    Raises:
        BackendUnavailable: either is missing; the message says how to install it.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"TensorRT is not installed here ({exc}); {INSTALL_HINT}") from exc
    return trt, load_cudart()


_LOGGER_LOCK = threading.Lock()
_LOGGERS: dict[int, Any] = {}  # id(tensorrt module) -> its one logger


def tensorrt_logger(trt: Any) -> Any:
    """The process's one TensorRT logger (WARNING and above), shared by the builder and every runtime.

    TensorRT keeps one global logger: a second ``trt.Logger`` passed to a builder or runtime is
    ignored with a warning, so every TensorRT object here is made with this one.
    """
    with _LOGGER_LOCK:
        if id(trt) not in _LOGGERS:
            _LOGGERS[id(trt)] = trt.Logger(trt.Logger.WARNING)
        return _LOGGERS[id(trt)]


def probe_device(trt: Any, cudart: Any, *, l4t_file: Path = L4T_RELEASE_FILE) -> DeviceIdentity:
    """The identity of the current CUDA device under the imported TensorRT."""
    return DeviceIdentity(str(trt.__version__), *probe_gpu(cudart), read_l4t_release(l4t_file))


@lru_cache(maxsize=1)
def current_device() -> DeviceIdentity:
    """This machine's identity (imports TensorRT and cuda-python; cached)."""
    return probe_device(*load_tensorrt())


# -- where engines live --------------------------------------------------------------------


def default_engine_root(bundle_source: Path) -> Path:
    """``<bundle>/engines`` for a bundle folder, ``<file>.engines`` beside a ``.mmedge`` file."""
    source = Path(bundle_source)
    return source / "engines" if source.is_dir() else source.with_name(source.name + ".engines")


def ort_trt_cache_dir(engine_root: Path, *, gpu: tuple[str, str] | None = None, ort_version: str | None = None,
                      l4t_file: Path = L4T_RELEASE_FILE) -> Path:
    """Where ONNX Runtime's TensorRT EP keeps its engine and timing caches: ``<engine_root>/<key>/ort-trt``.

    The key names the ONNX Runtime build (its TensorRT is the one it was built with) and the
    GPU, e.g. ``ort1.22.0_orin_sm87_l4t36.3.0``; without cuda-python the GPU part reads
    ``unidentified-gpu``.

    Args:
        engine_root: The engine root (``default_engine_root``).
        gpu: (name, compute capability); None asks CUDA through cuda-python.
        ort_version: None: ``onnxruntime.__version__``.
        l4t_file: The Jetson release file.
    """
    if ort_version is None:
        import onnxruntime

        ort_version = onnxruntime.__version__
    if gpu is None:
        try:
            gpu = probe_gpu(load_cudart())
        except (BackendUnavailable, CudaError):
            gpu = ("unidentified-gpu", "")
    key = f"ort{ort_version}_{_gpu_key(gpu[0], gpu[1], read_l4t_release(l4t_file))}"
    return Path(engine_root) / key / "ort-trt"


def engine_file(engine_root: Path, key: str, graph_rel: str) -> Path:
    """``encoders/image.fp16.onnx`` -> ``<engine_root>/<key>/encoders/image.fp16.engine``."""
    rel = Path(graph_rel)
    return Path(engine_root) / key / rel.parent / (rel.stem + ENGINE_SUFFIX)


def record_file(engine: Path) -> Path:
    """The build record next to ``engine`` (``X.engine`` -> ``X.engine.json``)."""
    engine = Path(engine)
    return engine.with_name(engine.name[: -len(ENGINE_SUFFIX)] + RECORD_SUFFIX)


def rebuild_hint(bundle_source: Path | str, precision: str, engine_root: Path | None = None) -> str:
    """What to run to (re)build the engines of ``precision`` on this device."""
    root = "" if engine_root is None or Path(engine_root) == default_engine_root(Path(bundle_source)) \
        else f" --engine-dir {engine_root}"
    return (f"run `mmedge build {bundle_source} --precision {precision}{root}` on this device "
            "(or open the Session with auto_build=True)")


# -- records -------------------------------------------------------------------------------


def read_record(engine: Path, *, hint: str) -> BuildRecord:
    """The build record of ``engine``; a missing or malformed one is an ``EngineMismatch``."""
    path = record_file(engine)
    if not path.is_file():
        raise EngineMismatch(f"engine {engine} has no build record {path.name} (an interrupted build, or a file "
                             f"copied without it); {hint}")
    return BuildRecord.from_json(path.read_text(encoding="utf-8", errors="replace"), where=path, hint=hint)


def record_problems(record: BuildRecord, here: DeviceIdentity, *, source_sha256: str | None,
                    engine_bytes: int | None = None) -> list[str]:
    """Every way ``record`` does not fit this device and this bundle graph (empty: it fits)."""
    problems = [f"{name}: engine built for {getattr(record.device, name)!r}, this device has "
                f"{getattr(here, name)!r}" for name in _IDENTITY_FIELDS
                if getattr(record.device, name) != getattr(here, name)]
    if source_sha256 is not None and record.source_sha256 != source_sha256:
        problems.append(f"source graph: engine built from sha256 {record.source_sha256[:12]}…, the bundle's "
                        f"{record.source_file} is {source_sha256[:12]}… (the bundle was re-exported)")
    if engine_bytes is not None and engine_bytes != record.engine_bytes:
        problems.append(f"engine file: {engine_bytes} bytes, the record says {record.engine_bytes} (a torn write)")
    return problems


def check_engine(engine: Path, here: DeviceIdentity, *, source_sha256: str | None, hint: str) -> BuildRecord:
    """The record of ``engine`` if it fits this device and graph, else ``EngineMismatch`` saying what differs."""
    record = read_record(engine, hint=hint)
    problems = record_problems(record, here, source_sha256=source_sha256, engine_bytes=Path(engine).stat().st_size)
    if problems:
        raise EngineMismatch(f"engine {engine} does not fit here: {'; '.join(problems)}; {hint}")
    return record


def missing_engine_error(engine_root: Path, here: DeviceIdentity, graph_rel: str, *, hint: str
                         ) -> BackendUnavailable | EngineMismatch:
    """The error for a missing engine: ``EngineMismatch`` naming what differs when engines for
    ``graph_rel`` exist only for other devices, ``BackendUnavailable`` when none was built at all."""
    mine = engine_file(engine_root, here.key, graph_rel)
    others = [_describe_other(key_dir.name, engine_file(engine_root, key_dir.name, graph_rel), here, hint)
              for key_dir in sorted(p for p in Path(engine_root).glob("*") if p.is_dir() and p.name != here.key)
              if engine_file(engine_root, key_dir.name, graph_rel).is_file()]
    if not others:
        return BackendUnavailable(f"no TensorRT engine for {graph_rel} at {mine} ({here.describe()}); {hint}")
    return EngineMismatch(f"no TensorRT engine for {graph_rel} for this device ({here.key}: {here.describe()}); "
                          f"engines exist only for other devices: {' | '.join(others)}. Engines do not move "
                          f"between TensorRT versions or GPUs: {hint}")


def _describe_other(key: str, engine: Path, here: DeviceIdentity, hint: str) -> str:
    try:
        record = read_record(engine, hint=hint)
    except EngineMismatch:
        return f"{key} (no readable build record)"
    return f"{key} ({'; '.join(record_problems(record, here, source_sha256=None)) or 'same device'})"


# -- atomic writes (``mmedge.atomic.atomic_write``) ----------------------------------------


def write_engine(engine: Path, data: bytes, record: BuildRecord) -> None:
    """Replaces an engine and its record so that no torn pair can look valid.

    The old record goes first (an engine without a record is refused), then the engine,
    then the new record, each written atomically.
    """
    record_file(engine).unlink(missing_ok=True)
    atomic_write(engine, data)
    atomic_write(record_file(engine), record.to_json())
