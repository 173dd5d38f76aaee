"""Every encoder of a bundle against the recipe a user would ship instead: ``run_peers``.

For each encoder of the bundle, on the same weights (the checkpoint's), the same input sizes
and real held-out inputs of the dataset, timed interleaved (warm-up excluded, medians) with
the same thread count:

- PyTorch eager and ``torch.compile`` (the checkpoint's module);
- mmedge fp32, int8 and int8-dynamic (the bundle's graphs, opened by the runtime's session factory;
  a quantized one only where the bundle has it as its own graph);
- the peer: for a transformer text encoder, Optimum's CPU recipe (legacy ONNX export,
  ONNX Runtime's BERT optimizer, ``quantize_dynamic`` per-channel); for the others, ONNX
  Runtime's ``quantize_static`` (QDQ, u8 activations, s8 per-channel weights) on the
  bundle's fp32 graph, calibrated on training rows;
- where openvino is installed: OpenVINO on the bundle's fp32 ONNX and on NNCF's int8 ONNX
  (``nncf.quantize`` of the fp32 graph with its defaults, calibrated on the same training rows),
  both with OpenVINO's default settings but the thread count (what a user on an x86 box would
  run), and mmedge's own graphs on mmedge's OpenVINO backend (``mmedge ... (openvino)``).

Fidelity is the pooled output's cosine to PyTorch fp32 on held-out rows, one row at a time (a
batched run of OpenVINO 2026.4's int8 graphs is wrong on rows after the first: see
``mmedge.runtime.backends.openvino``; timing runs the batch as each variant would); the floor is the
fp32 graph's FLOPs over the measured int8 / fp32 matmul peak. The report is
``mmedge.peers/1`` (checked by ``mmedge.bench.schema.validate_peers``)::

    schema "mmedge.peers/1"; command; created_utc; threads; iters; warmup
    peaks_gops  {fp32, int8}
    encoders    {modality: {encoder, fidelity_vs_pytorch_fp32{variant: {min, mean}},
                            batches{"<b>": {median_ms{variant: ms}, flops, floor_ms_fp32, floor_ms_int8}},
                            op_ms_b1{variant: {op_type: ms per run}} (ONNX Runtime's profiler, batch 1)}}

``benchmarks/peers.py`` and ``mmedge bench --peers`` run it; ``best_peer`` names, per batch,
the fastest variant that is not mmedge's and keeps the answers (what a user would otherwise ship:
OpenVINO's NNCF int8 text encoder at its default bf16 measured min cosine 0.37 to PyTorch, so it is
shown but not counted), ``fastest_mmedge`` mmedge's fastest (any of its graphs on any of its
backends) under the same bar.
"""
from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from mmedge.bench.options import BenchOptions
from mmedge.bench.schema import PEERS_SCHEMA
from mmedge.errors import DataError

__all__ = ["run_peers", "best_peer", "peer_min_cosine", "fastest_mmedge", "is_mmedge", "MMEDGE_VARIANTS", "CPU_PRECISIONS"]

Feed = dict[str, np.ndarray]
Fn = Callable[[Feed], np.ndarray]
CPU_PRECISIONS = ("int8", "int8-dynamic")  # the bundle's quantized CPU graphs compared, besides fp32
MMEDGE_VARIANTS = ("mmedge fp32", *(f"mmedge {p}" for p in CPU_PRECISIONS), "mmedge fp32 (openvino)",
                   "mmedge int8 (openvino)")


@dataclass(frozen=True)
class _Plan:
    opts: BenchOptions
    log: Callable[[str], None]


def run_peers(opts: BenchOptions, checkpoint: str | Path, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Times and compares every encoder of ``opts.bundle`` with its PyTorch and peer variants.

    Args:
        opts: The bench's options; this reads ``bundle``, ``data`` (None: the checkpoint
            recipe's dataset; calibration rows come from its "train" split, fidelity and timing
            rows from its "test" split), ``batches``, ``iters``, ``warmup`` (interleaved the same
            way), ``threads`` (ONNX Runtime and torch), ``peer_calib`` (training rows calibrating
            the ORT static peer), ``peer_eval`` (held-out rows of the fidelity cosines) and
            ``command`` (recorded in the report; empty: ``sys.argv``).
        checkpoint: The ``mmedge train`` folder the bundle was exported from (its weights).
        log: Receives one progress line per encoder and batch.

    Returns:
        The ``mmedge.peers/1`` report (see the module docstring).

    Raises:
        CheckpointError, BundleError, DataError: typed, with the fix.
    """
    from mmedge.evaluation import TorchReference
    from mmedge.export.flops import matmul_peak
    from mmedge.runtime import Bundle

    plan = _Plan(opts, log)
    ref = TorchReference.from_checkpoint(Path(checkpoint), threads=opts.threads)
    peaks = {k: matmul_peak(k, threads=opts.threads).gops for k in ("fp32", "int8")}
    with Bundle.open(opts.bundle) as opened:
        dataset = _dataset(opened, ref, opts.data)
        report = {m: _encoder_report(m, ref.model.encoders[m], opened, dataset, ref, plan, peaks)
                  for m in opened.encoders}
    return {"schema": PEERS_SCHEMA, "command": " ".join(opts.command or sys.argv),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "threads": opts.threads,
            "iters": opts.iters, "warmup": opts.warmup, "peaks_gops": peaks, "encoders": report}


def is_mmedge(variant: str) -> bool:
    """Whether a variant is mmedge's own (a bundle graph on one of mmedge's backends)."""
    return variant in MMEDGE_VARIANTS


Fidelity = Mapping[str, Mapping[str, float]]


def best_peer(median_ms: Mapping[str, float], fidelity: Fidelity | None = None) -> str | None:
    """The fastest variant that is not mmedge's and keeps the answers: its min cosine to PyTorch fp32
    (``fidelity``, when given) at least ``peer_min_cosine()``, the bar mmedge's own int8 graphs must
    pass (a peer whose outputs are far from the model's is not what a user would ship). None: none."""
    return _fastest(median_ms, fidelity, mmedge=False)


def peer_min_cosine() -> float:
    """The fidelity a peer must keep to count as best: the int8 precision record's ``min_cosine``."""
    from mmedge.runtime.precisions import get_precision

    return get_precision("int8").min_cosine


def fastest_mmedge(median_ms: Mapping[str, float], fidelity: Fidelity | None = None) -> str | None:
    """mmedge's fastest variant that keeps the answers (None when there is none): the same bar as
    ``best_peer`` (``fidelity``, when given), so a variant mmedge would not ship here, such as
    OpenVINO's int8 kernels that saturate on x86 CPUs without VNNI, does not count for it either."""
    return _fastest(median_ms, fidelity, mmedge=True)


def _fastest(median_ms: Mapping[str, float], fidelity: Fidelity | None, *, mmedge: bool) -> str | None:
    """The fastest of mmedge's variants (``mmedge``) or of the others whose min cosine passes ``peer_min_cosine()``."""
    bar = peer_min_cosine()
    kept = {k: v for k, v in median_ms.items() if is_mmedge(k) == mmedge
            and (fidelity is None or fidelity.get(k, {}).get("min", 1.0) >= bar)}
    return min(kept, key=lambda k: kept[k]) if kept else None


def _dataset(bundle: Any, ref: Any, data: str | None) -> Any:
    from mmedge.bench.context import load_dataset
    from mmedge.training import load_recipe_data

    if data is not None:
        return load_dataset(bundle, data)[0]
    return load_recipe_data(ref.recipe, seed=ref.meta.get("dataset", {}).get("seed", 0))


def _pooled_fn_torch(module: Any, names: tuple[str, ...]) -> Fn:
    import torch

    def run(feed: Feed) -> np.ndarray:
        with torch.inference_mode():
            out = module(*[torch.from_numpy(feed[n]) for n in names])
        return (out[0] if isinstance(out, (tuple, list)) else out).numpy()

    return run


def _pooled_fn_ort(path: Path, threads: int) -> Fn:
    from mmedge.runtime.backends.ort import create_session

    session = create_session(path, threads=threads)
    names = [i.name for i in session.get_inputs()]
    return lambda feed: session.run(None, {n: feed[n] for n in names})[0]


def _optimum_text(encoder: Any, example: Feed, work: Path) -> Path:
    """Optimum's CPU recipe: legacy export, BERT fusion, dynamic per-channel int8."""
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    raw, fused, quant = work / "text.legacy.onnx", work / "text.fused.onnx", work / "text.optimum-int8.onnx"
    names = tuple(encoder.input_names)
    torch.onnx.export(encoder, tuple(torch.from_numpy(example[n]) for n in names), str(raw), dynamo=False,
                      opset_version=17, input_names=list(names), output_names=["pooled", "seq", "mask"],
                      dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names})
    cfg = encoder.bert.config
    optimize_model(str(raw), model_type="bert", num_heads=cfg.num_attention_heads,
                   hidden_size=cfg.hidden_size).save_model_to_file(str(fused))
    quantize_dynamic(str(fused), str(quant), per_channel=True, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return quant


def _ort_static(fp32: Path, calib: list[Feed], work: Path, name: str) -> Path:
    """ONNX Runtime's static QDQ recipe: u8 activations, s8 per-channel weights."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calib)

        def get_next(self) -> Feed | None:
            return next(self._it, None)

    out = work / f"{name}.ort-static-int8.onnx"
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    return out


def _cosines(ref: Fn, fn: Fn, evals: list[Feed]) -> dict[str, float]:
    cos: list[float] = []
    rows = [{k: v[i:i + 1] for k, v in feed.items()} for feed in evals for i in range(len(next(iter(feed.values()))))]
    for feed in rows:
        a, b = ref(feed).astype(np.float64), fn(feed).astype(np.float64)
        cos += list((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12))
    return {"min": float(np.min(cos)), "mean": float(np.mean(cos))}


def _onnx_variants(m: str, enc: Any, bundle: Any, calib: list[Feed], work: Path) -> dict[str, Path]:
    """The ONNX graphs compared: mmedge's fp32 and quantized CPU graphs (each one its own graph, not one
    kept in fp32), and the peer recipe's."""
    graphs = bundle.encoders[m].graphs
    out = {"mmedge fp32": bundle.root / graphs["fp32"].file}
    for p in CPU_PRECISIONS:
        if p in graphs and graphs[p].built and bundle.precision_problem(p) is None:
            out[f"mmedge {p}"] = bundle.root / graphs[p].file
    if m == "text":
        out["peer: Optimum CPU recipe"] = _optimum_text(enc, calib[0], work)
    else:
        out["peer: ORT quantize_static QDQ"] = _ort_static(out["mmedge fp32"], calib, work, m)
    return out


def _variants(enc: Any, onnx_graphs: Mapping[str, Path], plan: _Plan, openvino: Mapping[str, Fn]) -> dict[str, Fn]:
    import torch

    names = tuple(enc.input_names)
    return {"pytorch eager": _pooled_fn_torch(enc, names),
            "torch.compile": _pooled_fn_torch(torch.compile(enc, dynamic=False), names),
            **{k: _pooled_fn_ort(path, plan.opts.threads) for k, path in onnx_graphs.items()}, **openvino}


def _openvino_variants(m: str, graphs: Mapping[str, Path], calib: list[Feed], work: Path, threads: int
                       ) -> dict[str, Fn]:
    """mmedge's graphs on its OpenVINO backend, and OpenVINO's defaults on the fp32 and NNCF int8 ONNX."""
    from mmedge.bench.peers_openvino import openvino_variants

    return openvino_variants(m, graphs, calib, work, threads)


def _op_profile(path: Path, feed: Feed, threads: int, runs: int = 30) -> dict[str, float]:
    """Milliseconds per run spent in each ONNX Runtime op type (its profiler, after 10 warm-up runs)."""
    import json

    from mmedge.runtime.backends.ort import create_session

    session = create_session(path, threads=threads, profile_prefix=path.parent / f"profile-{path.stem}")
    feed = {i.name: feed[i.name] for i in session.get_inputs()}
    for _ in range(10 + runs):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    kernel = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    totals: dict[str, float] = {}
    for e in kernel[len(kernel) * 10 // (10 + runs):]:  # the warm-up runs' nodes come first
        totals[e["args"]["op_name"]] = totals.get(e["args"]["op_name"], 0.0) + e["dur"] / 1000.0 / runs
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def _time(variants: Mapping[str, Fn], feed: Feed, plan: _Plan) -> dict[str, float]:
    from mmedge.runtime.timing import run_interleaved

    samples = run_interleaved({k: (lambda f=f: f(feed)) for k, f in variants.items()}, iters=plan.opts.iters,
                              warmup=plan.opts.warmup, rng_seed=0)
    return {k: float(np.median(v)) for k, v in samples.items()}


def _floor(fp32: Path, feed: Feed, peaks: Mapping[str, float]) -> dict[str, float]:
    from mmedge.export.flops import count_flops

    flops = count_flops(fp32, {k: v.shape for k, v in feed.items()}).flops
    return {"flops": float(flops), **{f"floor_ms_{k}": flops / (g * 1e9) * 1e3 for k, g in peaks.items()}}


def _rows(data: Any, split: str, purpose: str) -> np.ndarray:
    rows = np.asarray(data.splits.get(split, []))
    if not len(rows):
        raise DataError(f"the peers comparison needs {split!r} rows of dataset {data.name!r} ({purpose}), and it "
                        f"has none; pass --data with a dataset or JSONL file that has a {split!r} split")
    return rows


def _encoder_report(m: str, enc: Any, bundle: Any, data: Any, ref: Any, plan: _Plan, peaks: Mapping[str, float]
                    ) -> dict[str, Any]:
    from mmedge.features import modality_inputs

    test = _rows(data, "test", "timing and fidelity")
    train = _rows(data, "train", "calibrating the ONNX Runtime static peer")
    inputs = lambda rows: modality_inputs(data, m, list(rows), ref.recipe, ref.tokenizer_file)  # noqa: E731
    calib = [inputs(train[i:i + 1]) for i in range(min(plan.opts.peer_calib, len(train)))]
    evals = [inputs(test[i:i + 8]) for i in range(0, min(plan.opts.peer_eval, len(test)), 8)]
    fp32 = bundle.root / bundle.encoders[m].graphs["fp32"].file
    with tempfile.TemporaryDirectory(prefix=f"peers-{m}-") as tmp:
        graphs = _onnx_variants(m, enc, bundle, calib, Path(tmp))
        variants = _variants(enc, graphs, plan, _openvino_variants(m, graphs, calib, Path(tmp), plan.opts.threads))
        fidelity = {k: _cosines(variants["pytorch eager"], f, evals) for k, f in variants.items()}
        batches = {}
        for b in plan.opts.batches:
            feed = inputs(test[np.arange(b) % len(test)])
            batches[str(b)] = {"median_ms": _time(variants, feed, plan), **_floor(fp32, feed, peaks)}
            plan.log(f"{m} b{b}: " + ", ".join(f"{k} {v:.2f}" for k, v in batches[str(b)]["median_ms"].items()))
        feed = inputs(test[:1])
        profiles = {k: _op_profile(path, feed, plan.opts.threads) for k, path in graphs.items() if k != "mmedge fp32"}
    return {"encoder": bundle.encoders[m].name, "fidelity_vs_pytorch_fp32": fidelity, "batches": batches,
            "op_ms_b1": profiles}
