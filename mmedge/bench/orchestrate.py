"""``run_bench``: times a bundle per (precision, backend, batch), against PyTorch if asked.

Inputs are real rows of the held-out test split of the bundle's dataset (``manifest["dataset"]``
or ``--data``); every configuration, the single-member ones and the PyTorch baseline are timed
interleaved (``mmedge.runtime.timing.run_interleaved``), warm-up excluded, medians quoted. The
text-embedding cache is off (``text_cache_size=0``) so every call runs the text encoder.
Accuracy goes through the one scorer (``mmedge.evaluation.score``); the PyTorch side is
``mmedge.evaluation.TorchReference``, timed in this process (``--baseline torch``) or alone in
its own (``--baseline torch-process``, ``mmedge.bench.torch_process``). ``--peers`` adds the
per-encoder comparison of ``mmedge.bench.peers``. The report's schema is in ``mmedge.bench.schema``.
"""
from __future__ import annotations

import datetime as _dt
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mmedge.bench import context, fairness
from mmedge.bench.options import BenchOptions
from mmedge.bench.roofline import count_flops, measure_peaks, roofline_of
from mmedge.bench.schema import SCHEMA, comparisons
from mmedge.errors import CheckpointError, ConfigError
from mmedge.evaluation import TorchReference, label_targets, raw_inputs, score, session_predictor
from mmedge.runtime import probes
from mmedge.runtime.footprint import measure_footprint
from mmedge.runtime.timing import LatencyStats, run_interleaved, stage_stats

__all__ = ["run_bench"]

Log = Callable[[str], None]


@dataclass
class _Config:
    id: str
    kind: str
    precision: str
    backend: str
    members: tuple[str, ...]
    call: Callable[[Sequence[int]], Any]
    load_ms: float = 0.0
    rss_delta_bytes: int = 0
    graph_bytes: int = 0
    lanes: Mapping[str, Any] | None = None  # the Session's lane plan (runtime/encoder_lanes.py); None: PyTorch


@dataclass
class _Run:
    """What the timing loop needs, loaded once."""

    opts: BenchOptions
    bundle: Any
    data: Any
    source: str
    targets: np.ndarray
    acc_rows: np.ndarray
    log: Log
    rss_start: int
    padding: Mapping[str, int] = field(default_factory=dict)  # the runtime's length buckets, for the baseline


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _accuracy(predict: Callable[[Sequence[int]], tuple[np.ndarray, Mapping[str, np.ndarray]]], run: _Run
              ) -> dict[str, Any]:
    result = score(predict, run.acc_rows, run.targets)
    result.pop("predictions")
    return result


def _load_session(run: _Run, precision: str, backend: str, members: Sequence[str] | None) -> tuple[Any, float, int]:
    from mmedge.runtime import Session

    before, start = probes.rss_bytes(), time.perf_counter()
    session = Session(run.opts.bundle, precision=precision, backend=backend, threads=run.opts.threads,
                      text_cache_size=0, members=members)
    return session, _ms(start), probes.rss_bytes() - before


def _runtime_configs(run: _Run, member: str | None, sessions: list[Any]) -> tuple[list[_Config], dict[str, Any]]:
    configs, accuracy = [], {}
    for precision in run.opts.precisions:
        for backend in run.opts.backends:
            run.log(f"loading {precision}/{backend}")
            session, load_ms, rss = _load_session(run, precision, backend, None)
            sessions.append(session)
            label = backend_label(session)
            key, call = f"{precision}/{label}", session_predictor(session, run.data)
            if any(c.id == key for c in configs):  # auto ran what a named backend already runs
                run.log(f"{precision}/{backend} runs as {key}, already timed: skipped")
                sessions.remove(session)
                session.close()
                continue
            configs.append(_Config(key, "ensemble", precision, label,
                                   tuple(m.name for m in run.bundle.members), call, load_ms, rss,
                                   context.graph_bytes(run.bundle, precision, None), asdict(session.lane_plan)))
            if len(run.acc_rows):
                run.log(f"accuracy of {key} on {len(run.acc_rows)} test samples")
                accuracy[key] = _accuracy(lambda r, c=call: _probs(c(r)), run)
            if member is not None:
                single, load_ms, rss = _load_session(run, precision, backend, [member])
                sessions.append(single)
                configs.append(_Config(f"{key}/member={member}", "member", precision, backend_label(single), (member,),
                                       session_predictor(single, run.data), load_ms, rss,
                                       context.graph_bytes(run.bundle, precision, member), asdict(single.lane_plan)))
    return configs, accuracy


def backend_label(session: Any) -> str:
    """The Session's backend, with the other backends ``mixed`` placed graphs on: ``ort+openvino``."""
    others = sorted(set(session.backends.values()) - {session.backend})
    return "+".join([session.backend, *others])


def _probs(pred: Any) -> tuple[np.ndarray, Mapping[str, np.ndarray]]:
    return pred.probabilities, pred.member_probabilities


def _torch_config(run: _Run, path: Path, *, compiled: bool = False) -> tuple[_Config, dict[str, Any]]:
    run.log(f"loading the PyTorch baseline from {path}" + (" (torch.compile)" if compiled else ""))
    before, start = probes.rss_bytes(), time.perf_counter()
    reference = TorchReference.from_checkpoint(path, threads=run.opts.threads, compile=compiled,
                                               length_bucket=run.padding.get("text", 0), drop_unused=True)
    load_ms, rss = _ms(start), probes.rss_bytes() - before
    if list(reference.meta.get("labels", run.bundle.labels)) != list(run.bundle.labels):
        raise CheckpointError(f"checkpoint {path} has labels {reference.meta.get('labels')}, the bundle "
                              f"{list(run.bundle.labels)}: pass the checkpoint this bundle was exported from")
    config = _Config("torch/compile" if compiled else "torch/eager", "torch", "fp32", "torch",
                     tuple(reference.model.heads), lambda rows: reference.predict(run.data, rows), load_ms, rss)
    accuracy = {}
    if len(run.acc_rows) and not compiled:
        run.log(f"accuracy of the PyTorch baseline on {len(run.acc_rows)} test samples")
        accuracy = _accuracy(reference.predictor(run.data), run)
    return config, accuracy


def _timings_of(result: Any) -> Mapping[str, float]:
    return result[2] if isinstance(result, tuple) else result.timings_ms


def _time_batch(opts: BenchOptions, configs: Sequence[_Config], rows: list[int]) -> list[dict[str, Any]]:
    stages: dict[str, list[Mapping[str, float]]] = {c.id: [] for c in configs}
    fns = {c.id: (lambda c=c: c.call(rows)) for c in configs}
    samples = run_interleaved(fns, iters=opts.iters, warmup=opts.warmup, rng_seed=opts.seed + len(rows),
                              on_result=lambda name, r: stages[name].append(dict(_timings_of(r))))
    batch = len(rows)
    return [fairness.mark_disturbed({"id": f"{c.id}/b{batch}", "kind": c.kind, "precision": c.precision, "backend": c.backend,
             "batch": batch, "members": list(c.members), "threads": opts.threads, "lanes": c.lanes, "load_ms": c.load_ms,
             "rss_delta_bytes": int(c.rss_delta_bytes), "graph_bytes": c.graph_bytes,
             "latency_ms": LatencyStats.from_samples(samples[c.id], batch=batch).to_dict(),
             "stages_ms": {k: v.to_dict() for k, v in stage_stats(stages[c.id], batch=batch).items()},
             "samples_ms": samples[c.id]}) for c in configs]


def _rows_for(n_rows: int, batch: int) -> list[int]:
    return [i % n_rows for i in range(batch)]


_FIRST_START = ("first_prediction_s", "load_ms", "peak_rss_bytes")


def _footprints(run: _Run) -> dict[str, Any]:
    """Resident memory and time to first prediction of each precision in a fresh torch-free process,
    started twice in a row: the second start is the one reported (as every start of a deployed app
    after its first), the first one's figures are kept under ``first_start`` (after an install or an
    export it also verifies the bundle in full and writes ONNX Runtime's graph cache)."""
    if not run.opts.footprint:
        return {}
    out = {}
    inputs = raw_inputs(run.data, _rows_for(len(run.data), 1), run.bundle.modalities)
    for precision in run.opts.precisions:
        run.log(f"footprint of {precision} in a fresh torch-free process (two starts)")
        first = measure_footprint(run.opts.bundle, precision, inputs, threads=run.opts.threads)
        out[precision] = {**measure_footprint(run.opts.bundle, precision, inputs, threads=run.opts.threads),
                          "first_start": {k: first[k] for k in _FIRST_START}}
    return out


def run_bench(opts: BenchOptions, *, log: Log = lambda _msg: None) -> dict[str, Any]:
    """Runs the whole benchmark and returns the report (schema in ``mmedge.bench.schema``).

    Args:
        opts: What to measure.
        log: Receives one-line progress messages.

    Raises:
        BundleError, BackendUnavailable, DataError, CheckpointError, ConfigError: typed, with the fix.
    """
    from mmedge.runtime import Bundle

    rss_start = probes.rss_bytes()
    bundle = Bundle.open(opts.bundle)
    try:
        for p in opts.precisions:
            if (problem := bundle.precision_problem(p)) is not None:
                raise ConfigError(problem)
        checkpoint = _checkpoint(opts, bundle)  # fail before timing
        data, source = context.load_test_split(bundle, opts.data)
        rng = np.random.default_rng(opts.seed)
        padding = fairness.runtime_padding(opts) if opts.baseline is not None else {}
        run = _Run(opts, bundle, data, source, label_targets(data, bundle.labels),
                   np.sort(rng.permutation(len(data))[:opts.accuracy_samples]), log, rss_start, padding)
        report = _measure(run, checkpoint)
    finally:
        bundle.close()
    if opts.peers and checkpoint is not None:
        report["peers"] = _peers(opts, checkpoint, log)
    return report


def _checkpoint(opts: BenchOptions, bundle: Any) -> Path | None:
    if opts.baseline is not None:
        return context.checkpoint_path(opts, bundle)
    return context.checkpoint_path(opts, bundle, "--peers") if opts.peers else None


def _peers(opts: BenchOptions, checkpoint: Path, log: Log) -> dict[str, Any]:
    from mmedge.bench.peers import run_peers

    log("comparing every encoder with PyTorch eager, torch.compile and the peer recipe (--peers)")
    return run_peers(opts, checkpoint, log=log)


def _measure(run: _Run, checkpoint: Path | None) -> dict[str, Any]:
    opts, log = run.opts, run.log
    log("timing `import mmedge.runtime` in fresh interpreters")
    imports = [probes.measure_import_ms(s, repeats=opts.import_repeats)
               for s in ("import mmedge.runtime", "from mmedge.runtime import Session")]
    peak = measure_peaks(opts.threads, log)
    flops, flops_note = count_flops(run.bundle, log)
    footprint = _footprints(run)
    member, member_choice = context.most_accurate_member(run.bundle) if opts.members_compare and \
        len(run.bundle.members) > 1 else (None, {"chosen": None, "note": "not asked for, or a single member"})
    own = _own_process(run, checkpoint)
    records, accuracy, tegra, extra = _timed(run, checkpoint, member)
    if own is not None:
        accuracy["torch/eager"] = own["accuracy"]
        records = sorted(records + own["records"], key=lambda r: r["batch"])  # stable: own process last per batch
    for r in records:
        r.setdefault("flops_per_sample", None)
        r["roofline"] = roofline_of(r, flops, peak)
    env = context.environment_info(opts, own["torch_threads"] if own else None)
    return {"schema": SCHEMA, "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": list(opts.command or sys.argv), "settings": context.settings(opts),
            "environment": env, "bundle": context.bundle_info(run.bundle, opts),
            "data": {"source": run.source, "split": "test", "rows": len(run.data),
                     "timing_rows": {str(b): _rows_for(len(run.data), b) for b in opts.batches}},
            "import": imports, "peak": peak, "flops": {"per_sample": flops, "note": flops_note},
            "member_choice": member_choice, "configs": records, "accuracy": accuracy,
            "comparisons": comparisons(records),
            "fairness": {**_fairness(run, extra["thread_settings"], own), "disturbed": fairness.disturbed_ids(records)},
            **({"background_load": extra["background_load"]} if extra["background_load"] is not None else {}),
            "memory": {"rss_start_bytes": run.rss_start, "rss_end_bytes": probes.rss_bytes(),
                       "peak_rss_bytes": probes.peak_rss_bytes(), "torch_free_process": footprint},
            "device": {"tegrastats": tegra}}


def _fairness(run: _Run, runtime_threads: Mapping[str, Any], own: Mapping[str, Any] | None) -> dict[str, Any]:
    """The rules both sides ran under (``mmedge.bench.fairness``), each side's threads, disturbed configs."""
    sides = {"runtime": dict(runtime_threads)}
    if own is not None:
        sides["pytorch (own process)"] = own.get("thread_settings", {})
    elif run.opts.baseline == "torch":
        sides["pytorch (this process)"] = dict(runtime_threads)
    return {"blas_threads": fairness.BLAS_THREADS, "text_padding": {"runtime": dict(run.padding),
                                                                     "pytorch": dict(run.padding)},
            "thread_settings": sides, "disturbed_p90_over_p50": fairness.DISTURBED_P90_OVER_P50}


def _own_process(run: _Run, checkpoint: Path | None) -> dict[str, Any] | None:
    """``--baseline torch-process``: timed first, before this process loads any runtime session."""
    from mmedge.bench.torch_process import time_in_own_process  # not at import: it runs as ``python -m``

    if run.opts.baseline != "torch-process" or checkpoint is None:
        return None
    return time_in_own_process(run.opts, checkpoint, run.acc_rows.tolist(), log=run.log, padding=run.padding)


def _timed(run: _Run, checkpoint: Path | None, member: str | None
           ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Config records of every batch (interleaved), accuracies, the tegrastats summary, and the extras:
    this process's thread settings while timed, the ``--background-load`` comparison (or None)."""
    opts, sessions = run.opts, []
    try:
        configs, accuracy = _runtime_configs(run, member, sessions)
        if opts.baseline == "torch" and checkpoint is not None:
            torch_cfg, accuracy["torch/eager"] = _torch_config(run, checkpoint)
            configs.append(torch_cfg)
        with probes.TegrastatsSampler() as tegra, fairness.limit_blas():  # the baseline's own process's rule
            records = _time_batches(run, configs)
            threads = fairness.thread_settings(ort_threads=opts.threads)
        background = _background(run, configs, records) if opts.background_load else None
    finally:
        for s in sessions:
            s.close()
    return records, accuracy, tegra.summary(), {"thread_settings": threads, "background_load": background}


def _time_batches(run: _Run, configs: Sequence[_Config], note: str = "") -> list[dict[str, Any]]:
    records = []
    for batch in run.opts.batches:
        run.log(f"timing batch {batch}{note}: {len(configs)} configurations x {run.opts.iters} iterations, interleaved")
        records += _time_batch(run.opts, configs, _rows_for(len(run.data), batch))
    return records


def _background(run: _Run, configs: Sequence[_Config], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``--background-load``: the runtime's ensembles again beside a numpy thread (numpy's own BLAS threads)."""
    from mmedge.bench.background import with_and_without

    ensembles = [c for c in configs if c.kind == "ensemble"]
    return with_and_without([r for r in records if r["kind"] == "ensemble"],
                            lambda: _time_batches(run, ensembles, " beside a numpy load"))
