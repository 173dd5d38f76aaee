"""What ``mmedge build`` will do, decided without TensorRT: settings, the precisions to build,
the graph each engine is built from, which engines are already up to date, the workspace.

``engine_build`` runs the plan with TensorRT; everything here is pure and CPU-tested.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mmedge.errors import BundleError, ConfigError, EngineMismatch
from mmedge.export.engine_profiles import ProfileShape, profiles_to_dict
from mmedge.runtime.backends.trt_engines import (DeviceIdentity, default_engine_root, engine_file, read_record,
                                                 record_problems)
from mmedge.runtime.bundle import Bundle
from mmedge.runtime.precisions import PRECISIONS, tensorrt_precisions

__all__ = ["BuildConfig", "BuildJob", "select_precisions", "plan_jobs", "stale_reason",
           "workspace_bytes", "engine_root"]

MIB = 1 << 20
_WORKSPACE_CAP = 4 << 30
_WORKSPACE_FLOOR = 64 * MIB


@dataclass(frozen=True)
class BuildConfig:
    """Settings of one ``mmedge build``.

    Attributes:
        precisions: Bundle precisions to build, or ``("best",)``.
        max_batch: Largest batch the engines accept (profile max).
        opt_batch: The batch TensorRT tunes for (profile opt).
        workspace_mb: Builder workspace limit in MiB; None: a share of free device memory.
        opt_level: ``builder_optimization_level``, 0 (fast build) to 5 (slowest build, best search).
        engine_dir: Engine root (None: ``<bundle>/engines``, or ``<file>.engines`` beside a ``.mmedge``).
        force: Rebuild engines that are up to date.
    """

    precisions: tuple[str, ...] = ("best",)
    max_batch: int = 8
    opt_batch: int = 1
    workspace_mb: int | None = None
    opt_level: int = 3
    engine_dir: Path | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if not self.precisions:
            raise ConfigError("give at least one precision, e.g. --precision fp16 (or best)")
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ConfigError(f"--max-batch must be an integer >= 1, got {self.max_batch!r}")
        if not isinstance(self.opt_batch, int) or not 1 <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"the opt batch must be between 1 and --max-batch {self.max_batch}, got {self.opt_batch!r}")
        if not isinstance(self.opt_level, int) or not 0 <= self.opt_level <= 5:
            raise ConfigError(f"--opt-level must be 0..5 (TensorRT's builder_optimization_level), got {self.opt_level!r}")
        if self.workspace_mb is not None and (not isinstance(self.workspace_mb, int) or self.workspace_mb < 16):
            raise ConfigError(f"--workspace must be at least 16 (MiB), got {self.workspace_mb!r}")


@dataclass(frozen=True)
class BuildJob:
    """One engine to build (or to find up to date).

    Attributes:
        component: ``encoder.image``, ``head.concat``...
        precisions: The bundle precisions this engine serves (a component kept in fp32 for
            ``int8-trt`` serves ``fp32`` and ``int8-trt`` with one engine).
        source: The bundle graph it is built from.
        source_rel: Its bundle-relative path.
        source_sha256: Its sha256 (from the manifest, verified when the bundle was opened).
        engine: Where the engine goes.
        profiles: One per engine input.
        stale: Why it must be built (None: up to date).
    """

    component: str
    precisions: tuple[str, ...]
    source: Path
    source_rel: str
    source_sha256: str
    engine: Path
    profiles: tuple[ProfileShape, ...]
    stale: str | None


def _trt_source(precision: str) -> str:
    """The bundle precision whose graph TensorRT builds for ``precision`` (a strongly typed network:
    the graph's own types decide the layer precisions, FP16 from an fp16 graph, INT8 from s8 Q/DQ)."""
    return PRECISIONS[precision].tensorrt.source


def select_precisions(bundle: Bundle, requested: Sequence[str]) -> tuple[str, ...]:
    """The precisions to build: ``requested`` checked against the bundle, or ``best``.

    Raises:
        ConfigError: a precision TensorRT does not build (``int8``, the CPU graph), an unknown
            name, or ``best`` mixed with others.
        BundleError: a precision the bundle does not have with status ok.
    """
    requested = tuple(dict.fromkeys(requested))
    available, buildable = bundle.precisions(), tensorrt_precisions()
    if "best" in requested:
        if len(requested) > 1:
            raise ConfigError(f"--precision best picks one precision by itself; do not combine it with {requested}")
        best = [p for p in buildable if p in available]
        if not best:
            raise BundleError(f"bundle {bundle.source} has none of {list(buildable)} with status ok "
                              f"(it has {available}); re-export it with mmedge export")
        return (best[0],)
    for precision in requested:
        if precision in PRECISIONS and precision not in buildable:
            raise ConfigError(f"TensorRT does not build {precision}, {PRECISIONS[precision].summary}; build "
                              f"{', '.join(buildable[:-1])} or {buildable[-1]} instead")
        if precision not in buildable:
            raise ConfigError(f"TensorRT cannot build precision {precision!r}; valid: {[*buildable, 'best']}")
        problem = bundle.precision_problem(precision)
        if problem:
            raise BundleError(problem)
    return requested


def engine_root(bundle: Bundle, engine_dir: Path | None) -> Path:
    """``engine_dir``, or the bundle's default engine root."""
    return Path(engine_dir) if engine_dir is not None else default_engine_root(bundle.source)


def stale_reason(engine: Path, here: DeviceIdentity, source_sha256: str, profiles: tuple[ProfileShape, ...] | None
                 ) -> str | None:
    """Why the engine at ``engine`` must be (re)built, or None when it is up to date.

    ``profiles=None`` accepts whatever profiles the engine was built with.
    """
    if not engine.is_file():
        return "not built yet"
    try:
        record = read_record(engine, hint="it will be rebuilt")
    except EngineMismatch as exc:
        return str(exc)
    problems = record_problems(record, here, source_sha256=source_sha256, engine_bytes=engine.stat().st_size)
    wanted = profiles_to_dict(profiles) if profiles is not None else dict(record.profiles)
    if dict(record.profiles) != wanted:
        problems.append(f"optimization profiles changed (built {dict(record.profiles)}, wanted {wanted})")
    return "; ".join(problems) or None


def plan_jobs(bundle: Bundle, precisions: Sequence[str], *, root: Path, here: DeviceIdentity,
              profiles: dict[str, tuple[ProfileShape, ...]], components: Sequence[str] | None = None,
              force: bool = False, check_profiles: bool = True) -> list[BuildJob]:
    """One job per distinct engine: each (component, precision)'s graph, de-duplicated by file.

    Args:
        bundle: The opened bundle.
        precisions: From ``select_precisions``.
        root: The engine root; engines go to ``root/<here.key>/``.
        here: This device.
        profiles: From ``engine_profiles.component_profiles``.
        components: Only these (None: every component).
        force: Mark every job stale.
        check_profiles: Count an engine built with other profiles as stale.
    """
    jobs: dict[Path, BuildJob] = {}
    for precision in precisions:
        for component in components or bundle.components():
            entry = bundle.graph_entry(component, _trt_source(precision))
            engine = engine_file(root, here.key, str(entry.file))
            if engine in jobs:
                old = jobs[engine]
                jobs[engine] = BuildJob(**{**old.__dict__, "precisions": (*old.precisions, precision)})
                continue
            wanted = profiles[component] if check_profiles else None
            stale = "--force" if force else stale_reason(engine, here, str(entry.sha256), wanted)
            source = bundle.graph_path(component, _trt_source(precision))
            jobs[engine] = BuildJob(component, (precision,), source, str(entry.file), str(entry.sha256), engine,
                                    profiles[component], stale)
    return list(jobs.values())


def workspace_bytes(requested_mb: int | None, *, free_bytes: int, shared_memory: bool) -> int:
    """The builder's workspace limit.

    Without a request: a quarter of the free device memory on a Jetson (the GPU shares it
    with the CPU and the application) and half of it on a discrete GPU, capped at 4 GiB.

    Raises:
        ConfigError: a request above the free memory, or too little free memory to build.
    """
    free_mb = free_bytes // MIB
    if requested_mb is not None:
        if requested_mb * MIB > free_bytes:
            raise ConfigError(f"--workspace {requested_mb} MiB is more than the {free_mb} MiB of device memory free "
                              "now; pass a smaller --workspace or free memory (close other GPU programs)")
        return requested_mb * MIB
    share = free_bytes // (4 if shared_memory else 2)
    if share < _WORKSPACE_FLOOR:
        raise ConfigError(f"only {free_mb} MiB of device memory is free; the default workspace needs "
                          f"{_WORKSPACE_FLOOR * (4 if shared_memory else 2) // MIB} MiB free. Free memory, or pass "
                          "--workspace MB explicitly")
    return min(share, _WORKSPACE_CAP)
