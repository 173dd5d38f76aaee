"""``mmedge bench``: times a bundle per (precision, backend, batch), against PyTorch if asked.

Inputs are real rows of the held-out test split of the bundle's dataset (``manifest["dataset"]``
or ``--data``); every configuration, the single-member ones and the PyTorch baseline are timed
interleaved (``mmedge.runtime.bench.run_interleaved``), warm-up excluded, medians quoted. The
text-embedding cache is off (``text_cache_size=0``) so every call runs the text encoder.

JSON report, ``"schema": "mmedge.bench/1"`` (``validate_report`` checks it)::

    schema        "mmedge.bench/1"
    created_utc   ISO date;  command: argv list
    settings      precisions, backends, batches, iters, warmup, threads, baseline, checkpoint,
                  data, accuracy_samples, members_compare, seed, text_cache_size
    environment   python, platform, cpu_model, cpu_count_logical/physical, versions{...},
                  env{OMP_NUM_THREADS, ...}, threads{ort_intra_op, torch}, ort_providers
    bundle        path, name, sha256 (of manifest.json, which pins every file; of the zip for a
                  .mmedge), size_bytes, task, modalities, members, precisions, dataset
    data          source, split, rows (test rows available), timing_rows{batch: [row ids]}
    import        [{statement, median_ms, samples_ms, torch_imported}]  (fresh interpreters)
    peak          fp32 / int8 (ONNX Runtime MatMul probe at the bench's threads; null without
                  onnx), numpy_fp32: {gops, size, method}
    flops         per_sample{component: {flops, macs, ...}} | null, note
    configs       [{id, kind: ensemble|member|torch, precision, backend, batch, members, threads,
                    load_ms, rss_delta_bytes, graph_bytes, latency_ms{n, batch, p50, p90, p99,
                    mean, min, max, std, throughput_per_s}, stages_ms{stage: same}, samples_ms,
                    flops_per_sample, roofline{peak_gops, peak_kind, e2e{...}, compute{...}} | null}]
    accuracy      {"<precision>/<backend>" | "torch/eager": {samples, ensemble, members{}}}
    comparisons   [{name, batch, numerator, denominator, ratio_p50, stage_ratios_p50{}}]
    memory        rss_start_bytes, rss_end_bytes, peak_rss_bytes
    device        tegrastats: {available, ...}
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mmedge.errors import CheckpointError, ConfigError, DataError
from mmedge.runtime import bench

SCHEMA = bench.SCHEMA
PRECISIONS = ("fp32", "fp16", "int8", "int8-trt")

__all__ = ["SCHEMA", "BenchOptions", "run_bench", "validate_report", "write_json", "TorchBaseline"]


@dataclass(frozen=True)
class BenchOptions:
    """What ``run_bench`` measures (validated on construction; ``ConfigError`` names the bad value)."""

    bundle: Path
    precisions: tuple[str, ...] = ("fp32",)
    backends: tuple[str, ...] = ("ort",)
    batches: tuple[int, ...] = (1,)
    iters: int = 50
    warmup: int = 5
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    baseline: str | None = None
    checkpoint: Path | None = None
    data: str | None = None
    accuracy_samples: int = 200
    members_compare: bool = True
    seed: int = 0
    import_repeats: int = 3
    command: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if not self.precisions or bad:
            raise ConfigError(f"unknown precision(s) {bad or '(none)'}; valid: {list(PRECISIONS)}")
        if not self.backends:
            raise ConfigError("give at least one backend, e.g. --backend ort")
        if not self.batches or any(b < 1 for b in self.batches):
            raise ConfigError(f"batch sizes must be positive integers, got {list(self.batches)}")
        if self.iters < 1 or self.warmup < 0 or self.accuracy_samples < 0 or self.threads < 1:
            raise ConfigError(f"need iters >= 1, warmup >= 0, accuracy-samples >= 0, threads >= 1; got "
                              f"{self.iters}, {self.warmup}, {self.accuracy_samples}, {self.threads}")
        if self.baseline not in (None, "torch"):
            raise ConfigError(f"unknown baseline {self.baseline!r}; valid: 'torch'")


# -- data ------------------------------------------------------------------------------------


def _load_test_split(bundle: Any, data: str | None) -> tuple[Any, str]:
    from mmedge.datasets import build_dataset, list_datasets, load_jsonl

    spec = bundle.manifest.get("dataset")
    if data is None and not spec:
        raise DataError(f"bundle {bundle.name!r} does not name its dataset (no manifest 'dataset'); pass "
                        f"--data with a JSONL file or one of {list_datasets()}")
    if data is not None and Path(data).suffix == ".jsonl":
        task = "matching" if bundle.task == "matching" else "classification"
        ds, source = load_jsonl(data, labels=list(bundle.labels), task=task), str(data)
    else:
        name, seed = (data, 0) if data is not None else (spec["name"], int(spec.get("seed", 0)))
        ds, source = build_dataset(name, seed=seed), f"{name} (seed {seed})"
    missing = [m for m in bundle.modalities if m not in ds.modalities and m not in bundle.optional_modalities]
    if missing:
        raise DataError(f"dataset {source} lacks {missing}, which bundle {bundle.name!r} needs")
    return ds.split("test"), source


def _targets(bundle: Any, data: Any) -> np.ndarray:
    index = {name: i for i, name in enumerate(bundle.labels)}
    unknown = sorted({data.labels[i] for i in data.y} - set(index))
    if unknown:
        raise DataError(f"dataset labels {unknown} are not among the bundle's labels {list(bundle.labels)}")
    return np.array([index[data.labels[i]] for i in data.y], dtype=np.int64)


def _raw_inputs(data: Any, modalities: Sequence[str], rows: Sequence[int]) -> dict[str, Any]:
    values = {"image": data.images, "text": data.texts, "audio": data.audio}
    kwargs: dict[str, Any] = {m: [values[m][i] for i in rows] for m in modalities if values[m] is not None}
    if "audio" in kwargs:
        kwargs["audio_rate"] = data.audio_rate
    return kwargs


# -- PyTorch baseline ------------------------------------------------------------------------


class TorchBaseline:
    """The checkpoint's PyTorch ensemble, timed stage by stage like the runtime.

    Preprocessing is the runtime's numpy code (``mmedge.features.modality_inputs``; its
    tokenizer is loaded once, not per call).

    Args:
        checkpoint: The checkpoint folder (``mmedge train`` output).
        threads: ``torch.set_num_threads`` (the bench passes the ORT thread count).
    """

    def __init__(self, checkpoint: Path, threads: int) -> None:
        import torch

        from mmedge.checkpoint import TOKENIZER_FILE, load_checkpoint

        torch.set_num_threads(threads)
        self.model, self.meta = load_checkpoint(Path(checkpoint))
        self.recipe = self.model.recipe
        self.tokenizer_file = Path(checkpoint) / TOKENIZER_FILE

    def _inputs(self, data: Any, modality: str, rows: Sequence[int]) -> dict[str, np.ndarray]:
        from mmedge.features import modality_inputs

        return modality_inputs(data, modality, rows, self.recipe, self.tokenizer_file)

    def predict(self, data: Any, rows: Sequence[int]) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float]]:
        """Ensemble probabilities (B, C), member probabilities and per-stage milliseconds."""
        import torch

        from mmedge.runtime.ensemble import combine, softmax

        t0, timings, feats = time.perf_counter(), {}, {}
        with torch.inference_mode():
            for m, enc in self.model.encoders.items():
                start = time.perf_counter()
                x = self._inputs(data, m, rows)
                timings[f"preprocess.{m}"] = _ms(start)
                start = time.perf_counter()
                feats.update(zip(enc.output_names(), enc(*[torch.from_numpy(x[n]) for n in enc.input_names])))
                timings[f"encoder.{m}"] = _ms(start)
            logits = {}
            for name, head in self.model.heads.items():
                start = time.perf_counter()
                logits[name] = head(feats).numpy()  # (B, C)
                timings[f"head.{name}"] = _ms(start)
        start = time.perf_counter()
        model = self.model
        probs = combine(list(logits.values()), method=self.recipe.ensemble, weights=model.weights,
                        temperatures=model.temperatures)
        timings["ensemble"] = _ms(start)
        timings["total"] = _ms(t0)
        members = {n: softmax(v, t) for (n, v), t in zip(logits.items(), model.temperatures)}
        return probs, members, timings


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _checkpoint_path(opts: BenchOptions, bundle: Any) -> Path:
    from mmedge.checkpoint import read_checkpoint_meta

    source = bundle.manifest.get("source_checkpoint")
    candidates = [opts.checkpoint] if opts.checkpoint is not None else \
        [Path(source), bundle.source.parent / source] if source else []
    for path in candidates:
        if path.is_dir():
            read_checkpoint_meta(path)  # a typed error now, not after minutes of timing
            return path
    named = f"--checkpoint {opts.checkpoint}" if opts.checkpoint else f"the bundle's source_checkpoint {source}"
    raise CheckpointError(f"--baseline torch needs the PyTorch checkpoint, but {named} is not a folder; "
                          "pass --checkpoint PATH (the folder `mmedge train` wrote)")


# -- accuracy --------------------------------------------------------------------------------


def _accuracy(predict: Callable[[Sequence[int]], tuple[np.ndarray, Mapping[str, np.ndarray]]], rows: np.ndarray,
              targets: np.ndarray, chunk: int = 32) -> dict[str, Any]:
    hits, member_hits = 0, {}
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        probs, members = predict(part)
        hits += int((probs.argmax(axis=1) == targets[part]).sum())
        for name, p in members.items():
            member_hits[name] = member_hits.get(name, 0) + int((p.argmax(axis=1) == targets[part]).sum())
    n = max(len(rows), 1)
    return {"samples": int(len(rows)), "ensemble": hits / n, "members": {k: v / n for k, v in member_hits.items()}}


# -- the run ---------------------------------------------------------------------------------


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


def _load_session(opts: BenchOptions, precision: str, backend: str, members: Sequence[str] | None
                  ) -> tuple[Any, float, int]:
    from mmedge.runtime import Session

    before, start = bench.rss_bytes(), time.perf_counter()
    session = Session(opts.bundle, precision=precision, backend=backend, threads=opts.threads, text_cache_size=0,
                      members=members)
    return session, _ms(start), bench.rss_bytes() - before


def _runtime_configs(opts: BenchOptions, bundle: Any, data: Any, targets: np.ndarray, acc_rows: np.ndarray,
                     sessions: list[Any], log: Callable[[str], None]) -> tuple[list[_Config], dict[str, Any]]:
    configs, accuracy = [], {}
    for precision in opts.precisions:
        for backend in opts.backends:
            log(f"loading {precision}/{backend}")
            session, load_ms, rss = _load_session(opts, precision, backend, None)
            sessions.append(session)
            key = f"{precision}/{session.backend}"
            call = _session_call(session, data, bundle.modalities)
            configs.append(_Config(key, "ensemble", precision, session.backend, tuple(m.name for m in bundle.members),
                                   call, load_ms, rss, _graph_bytes(bundle, precision, None)))
            if len(acc_rows):
                log(f"accuracy of {key} on {len(acc_rows)} test samples")
                accuracy[key] = _accuracy(lambda r, c=call: _pred_probs(c(r)), acc_rows, targets)
            if opts.members_compare and len(bundle.members) > 1:
                best = _best_member(accuracy.get(key), bundle)
                member, load_ms, rss = _load_session(opts, precision, backend, [best])
                sessions.append(member)
                configs.append(_Config(f"{key}/member={best}", "member", precision, member.backend, (best,),
                                       _session_call(member, data, bundle.modalities), load_ms, rss,
                                       _graph_bytes(bundle, precision, best)))
    return configs, accuracy


def _session_call(session: Any, data: Any, modalities: Sequence[str]) -> Callable[[Sequence[int]], Any]:
    return lambda rows: session.predict(**_raw_inputs(data, modalities, rows))


def _pred_probs(pred: Any) -> tuple[np.ndarray, Mapping[str, np.ndarray]]:
    return pred.probabilities, pred.member_probabilities


def _best_member(acc: Mapping[str, Any] | None, bundle: Any) -> str:
    scores = (acc or {}).get("members") or bundle.manifest.get("metrics", {}).get("pytorch", {}).get("members") or {}
    ranked = [m.name for m in bundle.members if m.name in scores]
    if ranked:
        return max(ranked, key=lambda n: scores[n])
    return max(bundle.members, key=lambda m: m.weight).name  # no accuracy known: the heaviest-weighted one


def _graph_bytes(bundle: Any, precision: str, member: str | None) -> int:
    members = [bundle.member(member)] if member else list(bundle.members)
    used = {m for mb in members for m in mb.modalities}
    entries = [e.graphs[precision] for k, e in bundle.encoders.items() if k in used] + [m.graphs[precision] for m in members]
    return int(sum((bundle.root / e.file).stat().st_size for e in entries if e.file))


def _torch_config(opts: BenchOptions, path: Path, bundle: Any, data: Any, targets: np.ndarray, acc_rows: np.ndarray,
                  log: Callable[[str], None]) -> tuple[_Config, dict[str, Any]]:
    log(f"loading the PyTorch baseline from {path}")
    before, start = bench.rss_bytes(), time.perf_counter()
    baseline = TorchBaseline(path, opts.threads)
    load_ms, rss = _ms(start), bench.rss_bytes() - before
    if list(baseline.meta.get("labels", bundle.labels)) != list(bundle.labels):
        raise CheckpointError(f"checkpoint {path} has labels {baseline.meta.get('labels')}, the bundle "
                              f"{list(bundle.labels)}: pass the checkpoint this bundle was exported from")
    config = _Config("torch/eager", "torch", "fp32", "torch", tuple(baseline.model.heads),
                     lambda rows: baseline.predict(data, rows), load_ms, rss)
    accuracy = {}
    if len(acc_rows):
        log(f"accuracy of the PyTorch baseline on {len(acc_rows)} test samples")
        accuracy = _accuracy(lambda r: baseline.predict(data, r)[:2], acc_rows, targets)
    return config, accuracy


def _timings_of(result: Any) -> Mapping[str, float]:
    return result[2] if isinstance(result, tuple) else result.timings_ms


def _time_batch(opts: BenchOptions, configs: Sequence[_Config], rows: list[int]) -> list[dict[str, Any]]:
    stages: dict[str, list[Mapping[str, float]]] = {c.id: [] for c in configs}
    fns = {c.id: (lambda c=c: c.call(rows)) for c in configs}
    samples = bench.run_interleaved(fns, iters=opts.iters, warmup=opts.warmup, rng_seed=opts.seed + len(rows),
                                    on_result=lambda name, r: stages[name].append(dict(_timings_of(r))))
    batch = len(rows)
    return [{"id": f"{c.id}/b{batch}", "kind": c.kind, "precision": c.precision, "backend": c.backend,
             "batch": batch, "members": list(c.members), "threads": opts.threads, "load_ms": c.load_ms,
             "rss_delta_bytes": int(c.rss_delta_bytes), "graph_bytes": c.graph_bytes,
             "latency_ms": bench.LatencyStats.from_samples(samples[c.id], batch=batch).to_dict(),
             "stages_ms": {k: v.to_dict() for k, v in bench.stage_stats(stages[c.id], batch=batch).items()},
             "samples_ms": samples[c.id]} for c in configs]


def _rows_for(n_rows: int, batch: int) -> list[int]:
    return [i % n_rows for i in range(batch)]


# -- roofline, comparisons -------------------------------------------------------------------


def _flops(bundle: Any, log: Callable[[str], None]) -> tuple[dict[str, Any] | None, str]:
    try:
        from mmedge.export.flops import FLOPS_NOTE, bundle_flops_per_sample
    except ImportError as exc:
        return None, f"not available: counting FLOPs needs onnx (pip install 'mmedge[export]'): {exc}"
    log("counting FLOPs of the fp32 graphs")
    return {k: v.to_dict() for k, v in bundle_flops_per_sample(bundle).items()}, FLOPS_NOTE


def _peaks(threads: int, log: Callable[[str], None]) -> dict[str, Any]:
    log("measuring the matrix-multiply peak")
    out: dict[str, Any] = {"numpy_fp32": bench.numpy_matmul_peak()}
    try:
        from mmedge.export.flops import matmul_peak
    except ImportError:
        return {**out, "fp32": None, "int8": None, "note": "ORT probes need onnx; numpy fp32 only"}
    return {**out, "fp32": matmul_peak("fp32", threads=threads).to_dict(),
            "int8": matmul_peak("int8", threads=threads).to_dict(),
            "note": "fp32/int8: ONNX Runtime CPU MatMul / MatMulInteger at the bench's thread count"}


def _roofline(record: dict[str, Any], flops: Mapping[str, Any] | None, peak: Mapping[str, Any]) -> dict[str, Any] | None:
    if flops is None or record["backend"] not in ("ort", "torch"):
        return None  # a GPU backend: a CPU peak says nothing about it
    stages = record["stages_ms"]
    used = [k for k in stages if k.startswith(("encoder.", "head.")) and k in flops]
    per_sample = float(sum(flops[k]["flops"] for k in used))
    kind = "int8" if record["precision"].startswith("int8") and record["backend"] == "ort" else "fp32"
    chosen = peak.get(kind) or peak["numpy_fp32"]
    compute_ms = sum(stages[k]["p50"] for k in used)
    record["flops_per_sample"] = per_sample
    return {"peak_gops": chosen["gops"], "peak_kind": kind if peak.get(kind) else "numpy_fp32",
            "e2e": bench.roofline(per_sample, record["batch"], record["latency_ms"]["p50"], chosen["gops"]),
            "compute": bench.roofline(per_sample, record["batch"], compute_ms, chosen["gops"])}


# -- report ----------------------------------------------------------------------------------


def _bundle_info(bundle: Any, opts: BenchOptions) -> dict[str, Any]:
    source = Path(opts.bundle)
    files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
    pinned = source if source.is_file() else source / "manifest.json"
    return {"path": str(source), "name": bundle.name, "sha256": hashlib.sha256(pinned.read_bytes()).hexdigest(),
            "size_bytes": int(sum(p.stat().st_size for p in files)), "task": bundle.task,
            "modalities": list(bundle.modalities), "members": [m.name for m in bundle.members],
            "precisions": bundle.precisions(), "dataset": bundle.manifest.get("dataset")}


def _settings(opts: BenchOptions) -> dict[str, Any]:
    out = {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
           for k, v in asdict(opts).items() if k not in ("bundle", "command")}
    return {**out, "text_cache_size": 0}


def run_bench(opts: BenchOptions, *, log: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """Runs the whole benchmark and returns the report (schema in the module docstring).

    Args:
        opts: What to measure.
        log: Receives one-line progress messages.

    Raises:
        BundleError, BackendUnavailable, DataError, CheckpointError, ConfigError: typed, with the fix.
    """
    from mmedge.runtime import Bundle

    rss_start = bench.rss_bytes()
    bundle = Bundle.open(opts.bundle)
    try:
        for p in opts.precisions:
            if (problem := bundle.precision_problem(p)) is not None:
                raise ConfigError(problem)
        checkpoint = _checkpoint_path(opts, bundle) if opts.baseline == "torch" else None  # fail before timing
        return _run(opts, bundle, checkpoint, rss_start, log)
    finally:
        bundle.close()


def _run(opts: BenchOptions, bundle: Any, checkpoint: Path | None, rss_start: int, log: Callable[[str], None]
         ) -> dict[str, Any]:
    data, source = _load_test_split(bundle, opts.data)
    targets = _targets(bundle, data)
    rng = np.random.default_rng(opts.seed)
    acc_rows = np.sort(rng.permutation(len(data))[:opts.accuracy_samples])
    log("timing `import mmedge.runtime` in fresh interpreters")
    imports = [bench.measure_import_ms(s, repeats=opts.import_repeats)
               for s in ("import mmedge.runtime", "from mmedge.runtime import Session")]
    peak = _peaks(opts.threads, log)
    flops, flops_note = _flops(bundle, log)
    records: list[dict[str, Any]] = []
    sessions: list[Any] = []
    try:
        configs, accuracy = _runtime_configs(opts, bundle, data, targets, acc_rows, sessions, log)
        if checkpoint is not None:
            torch_cfg, accuracy["torch/eager"] = _torch_config(opts, checkpoint, bundle, data, targets, acc_rows, log)
            configs.append(torch_cfg)
        with bench.TegrastatsSampler() as tegra:
            for batch in opts.batches:
                log(f"timing batch {batch}: {len(configs)} configurations x {opts.iters} iterations, interleaved")
                records += _time_batch(opts, configs, _rows_for(len(data), batch))
    finally:
        for s in sessions:
            s.close()
    for r in records:
        r.setdefault("flops_per_sample", None)
        r["roofline"] = _roofline(r, flops, peak)
    return {"schema": SCHEMA, "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": list(opts.command or sys.argv), "settings": _settings(opts),
            "environment": _environment(opts), "bundle": _bundle_info(bundle, opts),
            "data": {"source": source, "split": "test", "rows": len(data),
                     "timing_rows": {str(b): _rows_for(len(data), b) for b in opts.batches}},
            "import": imports, "peak": peak, "flops": {"per_sample": flops, "note": flops_note},
            "configs": records, "accuracy": accuracy, "comparisons": bench.comparisons(records),
            "memory": {"rss_start_bytes": rss_start, "rss_end_bytes": bench.rss_bytes(),
                       "peak_rss_bytes": bench.peak_rss_bytes()},
            "device": {"tegrastats": tegra.summary()}}


def _environment(opts: BenchOptions) -> dict[str, Any]:
    env = bench.environment(opts.threads)
    if opts.baseline == "torch" and "torch" in sys.modules:
        env["threads"]["torch"] = int(sys.modules["torch"].get_num_threads())
    return env


validate_report = bench.validate_report
write_json = bench.write_json
