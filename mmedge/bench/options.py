"""Typed options of ``mmedge bench``."""
from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from mmedge.errors import ConfigError

__all__ = ["BenchOptions", "BASELINES", "option_default"]

BASELINES = (None, "torch", "torch-process")


@dataclass(frozen=True)
class BenchOptions:
    """What ``run_bench`` and ``run_peers`` measure (validated on construction; ``ConfigError`` names
    the bad value). The one declaration of the bench's settings and their defaults: ``mmedge bench``
    and ``benchmarks/peers.py`` read their option defaults from it (``option_default``).

    Attributes:
        bundle: Bundle folder or ``.mmedge`` file.
        precisions: Precisions to time (each must be one the bundle ships).
        backends: Backends to time.
        batches: Batch sizes to time.
        iters: Timed iterations per configuration.
        warmup: Untimed warm-up iterations (excluded from every statistic).
        threads: CPU threads for ONNX Runtime and torch (default: all cores).
        baseline: ``"torch"`` times the checkpoint's PyTorch ensemble interleaved with the
            runtime, in the same process; ``"torch-process"`` times it alone in a fresh process
            of its own (no co-resident thread pool flatters either side); None skips it.
        torch_compile: With ``"torch-process"``, also time the model under ``torch.compile`` in
            that process, interleaved with eager.
        checkpoint: The PyTorch checkpoint of the baseline and the peers (None: the bundle's
            ``source_checkpoint``).
        data: Dataset name or JSONL file (None: the bundle's dataset).
        accuracy_samples: Test samples of the accuracy check (0: skip).
        seed: Seed of the interleaving order and the accuracy subset.
        import_repeats: Fresh interpreters timing ``import mmedge.runtime``.
        peers: Also compare every encoder with PyTorch eager, ``torch.compile`` and the peer
            recipe (``mmedge.bench.peers``); needs the checkpoint, like the baseline.
        peer_calib: Training rows calibrating the peer's static quantization.
        peer_eval: Held-out rows of the peers' fidelity cosines.
        members_compare: Also time the member that is most accurate on the validation split.
        footprint: Measure each precision in a fresh torch-free process (resident memory,
            time to first prediction), started twice: the second start is reported, the first
            (which after an export also writes ONNX Runtime's graph cache) beside it.
        background_load: Time the runtime's ensembles again beside a thread of numpy work
            (``mmedge.bench.background``) and report p50 / p90 / p99 with and without it.
        command: The command line recorded in the report (default: ``sys.argv``).
    """

    bundle: Path
    precisions: tuple[str, ...] = ("fp32",)
    backends: tuple[str, ...] = ("ort",)
    batches: tuple[int, ...] = (1,)
    iters: int = 50
    warmup: int = 5
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    baseline: str | None = None
    torch_compile: bool = False
    checkpoint: Path | None = None
    data: str | None = None
    accuracy_samples: int = 200
    members_compare: bool = True
    seed: int = 0
    import_repeats: int = 3
    footprint: bool = True
    background_load: bool = False
    peers: bool = False
    peer_calib: int = 64
    peer_eval: int = 64
    command: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.precisions:
            raise ConfigError("give at least one precision, e.g. --precision fp32,int8 (the bundle says which it has)")
        if not self.backends:
            raise ConfigError("give at least one backend, e.g. --backend ort")
        if not self.batches or any(b < 1 for b in self.batches):
            raise ConfigError(f"batch sizes must be positive integers, got {list(self.batches)}")
        if self.iters < 1 or self.warmup < 0 or self.accuracy_samples < 0 or self.threads < 1:
            raise ConfigError(f"need iters >= 1, warmup >= 0, accuracy-samples >= 0, threads >= 1; got "
                              f"{self.iters}, {self.warmup}, {self.accuracy_samples}, {self.threads}")
        if self.peers and (self.peer_calib < 1 or self.peer_eval < 1):
            raise ConfigError(f"--peers needs --peer-calib >= 1 and --peer-eval >= 1; got {self.peer_calib}, "
                              f"{self.peer_eval}")
        if self.baseline not in BASELINES:
            raise ConfigError(f"unknown baseline {self.baseline!r}; valid: {[b for b in BASELINES if b]}")
        if self.torch_compile and self.baseline != "torch-process":
            raise ConfigError("--torch-compile times torch.compile in the baseline's own process: add "
                              "--baseline torch-process")


def option_default(name: str) -> Any:
    """The default of ``BenchOptions`` field ``name``: command lines read it instead of restating it.

    Raises:
        KeyError: ``name`` is not a field, or has no default.
    """
    for f in fields(BenchOptions):
        if f.name == name and f.default is not MISSING:
            return f.default
        if f.name == name and f.default_factory is not MISSING:
            return f.default_factory()
    raise KeyError(f"BenchOptions has no field {name!r} with a default")
