"""The TensorRT check behind ``benchmarks/gpu_check.sh`` (NVIDIA GPU + TensorRT + cuda-python).

1. ``mmedge build`` every TensorRT precision the bundle has (fp32, fp16, int8-trt, int8-fp16-trt),
   batch 1, into its own engine folder (``--engine-dir``, default ``~/.cache/mmedge/gpu_check/engines``):
   never the bundle's own ``engines`` folder, whose engines a user built for larger batches.
2. Each engine against ONNX Runtime CPU on the bundle's calibration samples: per component, the
   cosine of every output vs the same precision's graph on ORT CPU (does the engine compute what
   the graph says?) and vs fp32 on ORT CPU (what the precision costs); heads are fed the fp32
   encoder outputs, so each component is judged alone. Then the ensemble's label agreement with
   ORT CPU (same precision and fp32).
3. Latency at batch 1, interleaved: p50 / p99 per component and end to end, TensorRT next to
   ``ort`` (fp32, and int8 when the bundle has it) on the same machine.

Writes nothing but engines (and ``--json`` if given). Torch-free: runs on a Jetson.
``benchmarks/gpu_check.sh`` runs it as its ``tensorrt`` part.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mmedge.export.calibration_reader import load_calibration, take
from mmedge.export.engine_build import build_engines
from mmedge.export.engine_config import BuildConfig
from mmedge.export.parity import row_cosine
from mmedge.runtime import Bundle, Session
from mmedge.runtime.audio import preprocess_audio
from mmedge.runtime.backends import GraphRef, LoadSettings, open_runners
from mmedge.runtime.backends.trt_engines import default_engine_root
from mmedge.runtime.precisions import tensorrt_precisions
from mmedge.runtime.preprocess import TextTokenizer, preprocess_images
from mmedge.runtime.timing import run_interleaved, stage_stats

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ENGINES = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmedge" / "gpu_check" / "engines"
Arrays = dict[str, np.ndarray]


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--calib", type=Path, default=None, help="calibration JSONL/folder (default: the bundle's)")
    p.add_argument("--samples", type=int, default=48)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--opt-level", type=int, default=2)
    p.add_argument("--engine-dir", type=Path, default=DEFAULT_ENGINES,
                   help="where the batch-1 engines go (never the bundle's own engines folder)")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def _log(msg: str) -> None:
    print(msg, flush=True)


def _calibration(bundle: Bundle, path: Path | None, n: int) -> dict[str, list]:
    source = path or ROOT / str((bundle.manifest.calibration or {}).get("source", ""))
    if not source.exists():
        sys.exit(f"error: no calibration samples at {source}; pass --calib (calibration_data/<dataset>)")
    rate = bundle.specs["audio"].sample_rate if "audio" in bundle.specs else 16000
    return take(load_calibration(source, bundle.modalities, rate=rate), n)


def _encoder_inputs(bundle: Bundle, items: dict[str, list], i: int) -> dict[str, Arrays]:
    """Sample ``i`` preprocessed per modality, batch 1."""
    out: dict[str, Arrays] = {}
    if "image" in items:
        out["image"] = {"pixel_values": preprocess_images([items["image"][i]], bundle.specs["image"])}
    if "text" in items:
        out["text"] = TextTokenizer(bundle.tokenizer_path, bundle.specs["text"])([items["text"][i]])
    if "audio" in items:
        out["audio"] = {"mel": preprocess_audio([items["audio"][i]], bundle.specs["audio"])}
    return out


def _runners(bundle: Bundle, precision: str, backend: str, engine_dir: Path) -> dict[str, Any]:
    graphs = [GraphRef.from_bundle(bundle, component, precision) for component in bundle.components()]
    return open_runners(backend, graphs, LoadSettings(bundle.source, precision, engine_dir))


def _component_outputs(bundle: Bundle, runners: Mapping[str, Any], inputs: dict[str, Arrays],
                       feats: Arrays | None = None) -> dict[str, Arrays]:
    """Every component's outputs; heads read ``feats`` (the fp32 encoder outputs), or these
    runners' own encoder outputs when None."""
    out = {}
    for modality, feed in inputs.items():
        runner = runners[f"encoder.{modality}"]
        out[f"encoder.{modality}"] = runner.infer({n: feed[n] for n in runner.input_names})
    if feats is None:
        feats = {k: v for outs in out.values() for k, v in outs.items()}
    for member in bundle.members:
        out[f"head.{member.name}"] = runners[f"head.{member.name}"].infer({n: feats[n] for n in member.inputs})
    return out


def _fidelity(bundle: Bundle, items: dict[str, list], engine_dir: Path, precision: str,
              reference: list[dict[str, Arrays]]) -> dict[str, dict[str, float]]:
    """Component -> {min cosine vs same-precision ORT, min cosine vs fp32 ORT} over the samples."""
    trt = _runners(bundle, precision, "tensorrt", engine_dir)
    ort = _runners(bundle, precision, "ort", engine_dir)
    worst: dict[str, dict[str, float]] = {}
    for i, ref in enumerate(reference):
        feats = {k: v for c, outs in ref.items() if c.startswith("encoder.") for k, v in outs.items()}
        inputs = _encoder_inputs(bundle, items, i)
        got = _component_outputs(bundle, trt, inputs, feats)
        same = _component_outputs(bundle, ort, inputs, feats)
        for component, outs in got.items():
            row = worst.setdefault(component, {"vs_ort_same": 1.0, "vs_ort_fp32": 1.0})
            for name, value in outs.items():
                row["vs_ort_same"] = min(row["vs_ort_same"], row_cosine(same[component][name], value))
                row["vs_ort_fp32"] = min(row["vs_ort_fp32"], row_cosine(ref[component][name], value))
    for runner in [*trt.values(), *ort.values()]:
        runner.deactivate()
    return worst


def _given(bundle: Bundle, items: dict[str, list], i: int) -> dict[str, Any]:
    """``Session.predict`` arguments for sample ``i`` (batch 1)."""
    given: dict[str, Any] = {m: [items[m][i]] for m in ("image", "text") if m in items}
    if "audio" in items:
        given.update(audio=[items["audio"][i]], audio_rate=bundle.specs["audio"].sample_rate)
    return given


def _labels(session: Session, items: dict[str, list]) -> list[str]:
    n = len(next(iter(items.values())))
    return [session.predict(**_given(session.bundle, items, i)).labels[0] for i in range(n)]


def _agreement(bundle: Bundle, items: dict[str, list], engine_dir: Path, precision: str,
               fp32_labels: list[str]) -> dict[str, float]:
    with Session(bundle, precision=precision, backend="tensorrt", engine_dir=engine_dir) as s:
        got = _labels(s, items)
    with Session(bundle, precision=precision, backend="ort") as s:
        same = _labels(s, items)
    return {"vs_ort_same": float(np.mean(np.array(got) == np.array(same))),
            "vs_ort_fp32": float(np.mean(np.array(got) == np.array(fp32_labels)))}


def _latency(bundle: Bundle, items: dict[str, list], engine_dir: Path, configs: list[tuple[str, str]],
             iters: int, warmup: int) -> dict[str, dict[str, dict[str, float]]]:
    """(precision, backend) -> stage -> {p50, p99} at batch 1 (text cache off), interleaved."""
    given = _given(bundle, items, 0)
    sessions = {f"{p}/{b}": Session(bundle, precision=p, backend=b, engine_dir=engine_dir, text_cache_size=0)
                for p, b in configs}
    timings: dict[str, list] = {k: [] for k in sessions}
    try:
        run_interleaved({k: (lambda s=s: s.predict(**given)) for k, s in sessions.items()}, iters=iters,
                        warmup=warmup, on_result=lambda k, pred: timings[k].append(pred.timings_ms))
    finally:
        for s in sessions.values():
            s.close()
    return {k: {stage: {"p50": st.p50, "p99": st.p99} for stage, st in stage_stats(t).items()}
            for k, t in timings.items()}


def _print_latency(latency: dict[str, dict[str, dict[str, float]]]) -> None:
    stages = [s for s in next(iter(latency.values())) if s.startswith(("encoder.", "head.")) or s == "total"]
    _log(f"\n{'config':<24}" + "".join(f"{s:>26}" for s in stages))
    for key, row in latency.items():
        cells = "".join(f"{row[s]['p50']:>12.3f} /{row[s]['p99']:>9.3f} ms" if s in row else f"{'-':>26}"
                        for s in stages)
        _log(f"{key:<24}{cells}")
    _log("(p50 / p99 per component and end to end ('total', preprocessing included), batch 1)")


def _build(bundle: Bundle, precisions: tuple[str, ...], engine_dir: Path, opt_level: int) -> Any:
    def show(phase: str, job: Any, result: Any) -> None:
        if phase == "done":
            what = f"built in {result.seconds:.1f} s" if result.built else "up to date"
            _log(f"  {job.component:<24} {'/'.join(job.precisions):<28} {what}, {result.engine_bytes / 1e6:.1f} MB")

    settings = BuildConfig(precisions=precisions, max_batch=1, opt_level=opt_level, engine_dir=engine_dir)
    return build_engines(bundle, settings, on_event=show)


def _check(bundle: Bundle, items: dict[str, list], engine_dir: Path, precisions: tuple[str, ...]) -> dict[str, Any]:
    n = len(next(iter(items.values())))
    fp32 = _runners(bundle, "fp32", "ort", engine_dir)
    reference = [_component_outputs(bundle, fp32, _encoder_inputs(bundle, items, i)) for i in range(n)]
    with Session(bundle, precision="fp32", backend="ort") as s:
        fp32_labels = _labels(s, items)
    results = {}
    for precision in precisions:
        fidelity = _fidelity(bundle, items, engine_dir, precision, reference)
        agreement = _agreement(bundle, items, engine_dir, precision, fp32_labels)
        results[precision] = {"components": fidelity, "ensemble_label_agreement": agreement}
        _log(f"\n{precision}: ensemble label agreement with ORT CPU {agreement['vs_ort_same']:.3f} (same graph), "
             f"{agreement['vs_ort_fp32']:.3f} (fp32) on {n} calibration samples")
        for component, row in fidelity.items():
            _log(f"  {component:<24} min cosine {row['vs_ort_same']:.5f} vs ORT same graph, "
                 f"{row['vs_ort_fp32']:.5f} vs ORT fp32")
    return results


def check_engine_dir(bundle: Bundle, engine_dir: Path) -> Path:
    """``engine_dir``, unless it is the bundle's own engine root (exits saying why)."""
    own = default_engine_root(bundle.source)
    if Path(engine_dir).resolve() == own.resolve():
        sys.exit(f"error: --engine-dir {engine_dir} is the bundle's own engine folder; gpu_check builds batch-1 "
                 "engines, which would replace the engines `mmedge build` made there for larger batches. Pass "
                 f"another folder (default {DEFAULT_ENGINES})")
    return Path(engine_dir)


def main(argv: list[str]) -> int:
    args = _args(argv)
    start = time.perf_counter()
    bundle = Bundle.open(args.bundle)
    if "fp32" not in bundle.precisions():
        sys.exit(f"error: {args.bundle} has no fp32 precision to compare against")
    precisions = tuple(p for p in tensorrt_precisions() if p in bundle.precisions())
    engine_dir = check_engine_dir(bundle, args.engine_dir)
    report = _build(bundle, precisions, engine_dir, args.opt_level)
    _log(f"built on {report.device.describe()} in {time.perf_counter() - start:.0f} s")
    items = _calibration(bundle, args.calib, args.samples)
    results: dict[str, Any] = {"device": report.device.describe(), "samples": len(next(iter(items.values()))),
                               "precisions": _check(bundle, items, engine_dir, precisions)}
    configs = [("fp32", "ort")] + ([("int8", "ort")] if "int8" in bundle.precisions() else []) + \
              [(p, "tensorrt") for p in precisions]
    results["latency"] = _latency(bundle, items, engine_dir, configs, args.iters, args.warmup)
    _print_latency(results["latency"])
    _log(f"\ngpu_check done in {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
