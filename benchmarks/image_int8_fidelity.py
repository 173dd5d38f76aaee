"""Encoder int8 fidelity (issue 18 item 6): NNCF's calibration options on the reference image (or
text) encoder, each graph's min / mean pooled cosine to the fp32 graph on held-out rows, and its latency.

Every variant quantizes the bundle's own fp32 graph with ``mmedge.export.quantization``'s NNCF
call (u8 activations as the ``int8`` precision ships them), calibrated on the first ``--calib``
training rows of the bundle's dataset (preprocessed by the runtime), and is judged on the first
``--eval`` test rows: the lowest and mean cosine of the pooled output to the fp32 graph's on ONNX
Runtime, and the median latency at batch 1 and 8, interleaved with the others. ONNX Runtime's
``quantize_static`` (MinMax, u8/s8 per-channel) is the peer. Each graph's cosines are taken three
times: with the runtime's sessions (``mmedge.runtime.backends.ort.create_session``: exact 8-bit
products on every CPU), with ONNX Runtime's default kernels (on an x86 CPU without VNNI their u8 x s8
products are added in pairs into int16, which saturates: ``mmedge.runtime.int8_kernels``), and as
written (Q/DQ in float: what a CPU with VNNI or TensorRT computes). The report names the CPU and
whether it has VNNI.

    python benchmarks/image_int8_fidelity.py --bundle bundles/digits-av --json benchmarks/image_int8_fidelity.json
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmedge.runtime.timing import run_interleaved

Feed = dict[str, np.ndarray]
Build = Callable[[Path, list[Feed], Path, str], None]  # (fp32 graph, calibration, out, NNCF model type)


MODEL_TYPES = {"image": "cnn", "text": "transformer"}


def _feeds(bundle_path: Path, encoder: str, calib_rows: int, eval_rows: int
           ) -> tuple[list[Feed], list[Feed], Feed]:
    """Calibration batches (one row each, as export's) from the train split; eval rows from the test
    split; and a batch of 8 test rows (for timing), each preprocessed by the runtime."""
    from mmedge.bench.context import load_dataset
    from mmedge.runtime import Bundle, Session

    bundle = Bundle.open(bundle_path)
    data, _ = load_dataset(bundle, None)
    with Session(bundle_path, backend="ort") as session:
        preprocess = session._preprocessors[encoder]

    def rows(split: str, n: int, batch: int = 1) -> list[Feed]:
        part = getattr(data.split(split), "images" if encoder == "image" else "texts")
        return [preprocess(list(part[i:i + batch])) for i in range(0, min(n, len(part)), batch)]
    return rows("train", calib_rows), rows("test", eval_rows), rows("test", 8, 8)[0]


def _nncf_variant(fast_bias: bool | None = True, estimator: str | None = None, subset: int = 300) -> Build:
    """An NNCF recipe for the CNN (image) encoder: ``fast_bias`` True (fast), False (NNCF's full
    BiasCorrection) or None (off)."""
    def build(fp32: Path, calib: list[Feed], out: Path, model_type: str) -> None:
        import nncf
        import onnx

        from mmedge.export.quantization.graph_surgery import shift_activations_to_uint8
        from mmedge.export.quantization.nncf_ptq import ActivationScheme, _options, _quiet

        _quiet()
        options = _options(ActivationScheme.ASYMMETRIC, "cnn", ())
        adv = options["advanced_parameters"]
        adv.disable_bias_correction = fast_bias is None
        if estimator is not None:
            from nncf.quantization.range_estimator import RangeEstimatorParametersSet

            adv.activations_range_estimator_params = getattr(RangeEstimatorParametersSet, estimator)
        model = nncf.quantize(onnx.load(str(fp32)), nncf.Dataset(calib), subset_size=min(subset, len(calib)),
                              fast_bias_correction=fast_bias is not False, **options)
        shift_activations_to_uint8(model)
        onnx.save(model, str(out))
    return build


def _shipped(precision: str) -> Build:
    """What ``mmedge export`` ships as ``precision`` (``POLICIES[precision]``)."""
    def build(fp32: Path, calib: list[Feed], out: Path, model_type: str) -> None:
        from mmedge.export.quantization import POLICIES

        POLICIES[precision].build(fp32, out, calib=calib, model_type=model_type)
    return build


def _shipped_7bit(fp32: Path, calib: list[Feed], out: Path, model_type: str) -> None:
    """The ``int8`` recipe with its weights kept to 7 bits (``saturation_safe``: 2026-12-06 to 12-07)."""
    import onnx

    from mmedge.export.quantization.graph_surgery import shift_activations_to_uint8
    from mmedge.export.quantization.nncf_ptq import ActivationScheme, nncf_quantize

    model, _, _ = nncf_quantize(fp32, calib, model_type=model_type, activations=ActivationScheme.ASYMMETRIC,
                                saturation_safe=True)
    shift_activations_to_uint8(model)
    onnx.save(model, str(out))


def _cpu() -> dict[str, Any]:
    """This CPU's model name and whether it has VNNI (no int16 saturation in u8 x s8 kernels)."""
    from mmedge.runtime.cpu import cpu_flags, cpu_model
    from mmedge.runtime.int8_kernels import VNNI_FLAGS

    return {"model": cpu_model(), "vnni": bool((cpu_flags() or frozenset()) & VNNI_FLAGS)}


def _ort_static(fp32: Path, calib: list[Feed], out: Path, model_type: str) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calib)

        def get_next(self) -> Feed | None:
            return next(self._it, None)
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)


VARIANTS: dict[str, Build] = {
    "nncf fast bias correction (before)": _nncf_variant(True),
    "nncf no bias correction": _nncf_variant(None),
    "nncf full bias correction": _nncf_variant(False),
    "nncf MINMAX, fast bias correction": _nncf_variant(True, "MINMAX"),
    "nncf MINMAX, no bias correction": _nncf_variant(None, "MINMAX"),
    "nncf MEAN_QUANTILE, fast bias correction": _nncf_variant(True, "MEAN_QUANTILE"),
    "nncf MINMAX, full bias correction": _nncf_variant(False, "MINMAX"),
    "nncf MINMAX, fast bias correction, 1000 rows": _nncf_variant(True, "MINMAX", subset=1000),
    "mmedge int8, 7-bit weights (before)": _shipped_7bit,
    "mmedge int8 as export builds it (now)": _shipped("int8"),
    "ort quantize_static MinMax (peer)": _ort_static,
    "mmedge int8-trt, TensorRT's graph": _shipped("int8-trt"),
}
CNN_ONLY = ("nncf ",)  # the calibration experiments above set CNN options


KERNELS = ("runtime", "default_kernels", "as_written")  # how each graph's cosines are taken (module docstring)


def _run(path: Path, threads: int, kernels: str = "runtime") -> Callable[[Feed], np.ndarray]:
    """The graph's pooled output, computed as ``kernels`` says."""
    import onnxruntime as ort

    from mmedge.runtime.backends.ort import EXACT_INT8_OPTION, create_session, session_options
    from mmedge.runtime.precisions import QDQ_AS_FLOAT

    if kernels == "default_kernels":  # the runtime's options but ONNX Runtime's default u8 x s8 kernels
        options = session_options(threads)
        options.add_session_config_entry(EXACT_INT8_OPTION, "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    else:
        session = create_session(path, threads=threads, disabled_optimizers=QDQ_AS_FLOAT if kernels == "as_written" else ())
    return lambda feed: session.run(None, feed)[0]


def _cosines(ref: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    """Lowest and mean row cosine over every eval row, and the lowest over the first 64 (what
    ``mmedge bench --peers`` quotes: its ``peer_eval`` default)."""
    a, b = np.concatenate(ref).astype(np.float64), np.concatenate(got).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()), "min_cosine_64": float(cos[:64].min())}


def _wanted(variant: str, only: str, encoder: str) -> bool:
    """Whether the variant applies to the encoder and ``--only`` names it (without it: every one that applies)."""
    return (not only or variant in only.split("|")) and (encoder == "image" or not variant.startswith(CNN_ONLY))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("bundles/digits-av"))
    ap.add_argument("--encoder", choices=sorted(MODEL_TYPES), default="image")
    ap.add_argument("--calib", type=int, default=1000,
                    help="training rows calibrating the variants (each uses at most its own subset: 300 by default)")
    ap.add_argument("--eval", type=int, default=300, help="held-out rows the cosines are taken on")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--only", default="", help="variant names separated by | (default: all, the image encoder's)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    unknown = [k for k in args.only.split("|") if args.only and k not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; valid: {list(VARIANTS)}")
    calib, evals, batch8 = _feeds(args.bundle, args.encoder, args.calib, args.eval)
    fp32 = args.bundle / f"encoders/{args.encoder}.fp32.onnx"
    reference = _run(fp32, args.threads)
    ref = [reference(f) for f in evals]
    chosen = {k: v for k, v in VARIANTS.items() if _wanted(k, args.only, args.encoder)}
    report: dict[str, Any] = {"schema": "mmedge.image_int8_fidelity/1", "command": ["python", *sys.argv],
                              "encoder": args.encoder, "calib_rows": len(calib), "eval_rows": len(evals), "cpu": _cpu(),
                              "variants": {}}
    with tempfile.TemporaryDirectory(prefix="mmedge-int8-fidelity-") as tmp:
        runs = {}
        for i, (name, build) in enumerate(chosen.items()):
            out = Path(tmp) / f"v{i}.onnx"
            t = time.perf_counter()
            build(fp32, calib, out, MODEL_TYPES[args.encoder])
            entry = report["variants"][name] = {"build_s": time.perf_counter() - t}
            for kernels in KERNELS:
                fn = _run(out, args.threads, kernels)
                suffix = "" if kernels == "runtime" else f"_{kernels}"
                entry.update({f"{k}{suffix}": v for k, v in _cosines(ref, [fn(f) for f in evals]).items()})
                if kernels != "as_written":
                    runs[name, kernels] = fn
            print(f"{name}: {entry}", flush=True)
        keys = list(runs)
        for batch, feed in (("b1", evals[0]), ("b8", batch8)):
            samples = run_interleaved({str(i): functools.partial(runs[k], feed) for i, k in enumerate(keys)},
                                      iters=args.iters, warmup=10)
            for i, (name, kernels) in enumerate(keys):
                field = f"{batch}_ms" + ("" if kernels == "runtime" else f"_{kernels}")
                report["variants"][name][field] = statistics.median(samples[str(i)])
    for name, v in report["variants"].items():
        print(f"{name:42s} min {v['min_cosine']:.4f} (first 64 rows {v['min_cosine_64']:.4f}) mean {v['mean_cosine']:.4f}; "
              f"default kernels {v['min_cosine_default_kernels']:.4f}; as written {v['min_cosine_as_written']:.4f}; "
              f"b1 {v['b1_ms']:.3f} / {v['b1_ms_default_kernels']:.3f} ms, b8 {v['b8_ms']:.3f} / "
              f"{v['b8_ms_default_kernels']:.3f} ms (runtime / default kernels)")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
