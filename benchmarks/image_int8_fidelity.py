"""Image encoder int8 fidelity (issue 18 item 6): NNCF's calibration options on the reference image
encoder, each graph's min / mean pooled cosine to the fp32 graph on held-out rows, and its latency.

Every variant quantizes the bundle's own fp32 image graph with ``mmedge.export.quantization``'s
NNCF call (u8 activations as the ``int8`` precision ships them), calibrated on the first
``--calib`` training rows of the bundle's dataset (preprocessed by the runtime), and is judged on
the first ``--eval`` test rows: the lowest and mean cosine of ``image_pooled`` to the fp32 graph's
on ONNX Runtime, and the median batch-1 latency, interleaved with the others. ONNX Runtime's
``quantize_static`` (MinMax, u8/s8 per-channel) is the peer. Each graph's cosines are taken twice:
as this CPU's integer kernels compute it, and as written (Q/DQ in float: what a CPU with VNNI or
TensorRT computes); they differ where this CPU lacks VNNI and a graph's u8 x s8 pair sums saturate
int16 (``docs/quantization_notes.md``). The report names the CPU and whether it has VNNI.

    python benchmarks/image_int8_fidelity.py --bundle bundles/digits-av --json benchmarks/image_int8_fidelity.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

Feed = dict[str, np.ndarray]


def _feeds(bundle_path: Path, calib_rows: int, eval_rows: int) -> tuple[list[Feed], list[Feed]]:
    """Calibration batches (one row each, as export's) from the train split; eval rows from the test split."""
    from mmedge.bench.context import load_dataset
    from mmedge.runtime import Bundle
    from mmedge.runtime.preprocess import preprocess_images

    bundle = Bundle.open(bundle_path)
    data, _ = load_dataset(bundle, None)
    spec, name = bundle.specs["image"], bundle.encoders["image"].inputs[0].name

    def rows(split: str, n: int) -> list[Feed]:
        part = data.split(split)
        return [{name: preprocess_images([part.images[i]], spec)} for i in range(min(n, len(part)))]
    return rows("train", calib_rows), rows("test", eval_rows)


def _nncf_variant(fast_bias: bool | None = True, estimator: str | None = None, subset: int = 300
                  ) -> Callable[[Path, list[Feed], Path], None]:
    """An NNCF recipe: ``fast_bias`` True (fast), False (NNCF's full BiasCorrection) or None (off)."""
    def build(fp32: Path, calib: list[Feed], out: Path) -> None:
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


def _shipped(fp32: Path, calib: list[Feed], out: Path) -> None:
    """What ``mmedge export`` ships as the ``int8`` precision (``POLICIES["int8"]``)."""
    from mmedge.export.quantization import POLICIES

    POLICIES["int8"].build(fp32, out, calib=calib, model_type="cnn")


def _shipped_8bit(fp32: Path, calib: list[Feed], out: Path) -> None:
    """The ``int8`` recipe before its weights were kept to 7 bits (``saturation_safe=False``)."""
    import onnx

    from mmedge.export.quantization.graph_surgery import shift_activations_to_uint8
    from mmedge.export.quantization.nncf_ptq import ActivationScheme, nncf_quantize

    model, _, _ = nncf_quantize(fp32, calib, model_type="cnn", activations=ActivationScheme.ASYMMETRIC)
    shift_activations_to_uint8(model)
    onnx.save(model, str(out))


def _tensorrt_graph(fp32: Path, calib: list[Feed], out: Path) -> None:
    """What ``mmedge export`` ships as ``int8-trt`` (TensorRT's s8 Q/DQ graph, run here by ONNX Runtime)."""
    from mmedge.export.quantization import POLICIES

    POLICIES["int8-trt"].build(fp32, out, calib=calib, model_type="cnn")


def _cpu() -> dict[str, Any]:
    """This CPU's model name and whether it has VNNI (no int16 saturation in u8 x s8 kernels)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {"model": name, "vnni": any(f in flags for f in ("avx512_vnni", "avx_vnni"))}


def _ort_static(fp32: Path, calib: list[Feed], out: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calib)

        def get_next(self) -> Feed | None:
            return next(self._it, None)
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)


VARIANTS: dict[str, Callable[[Path, list[Feed], Path], None]] = {
    "nncf fast bias correction (before)": _nncf_variant(True),
    "nncf no bias correction": _nncf_variant(None),
    "nncf full bias correction": _nncf_variant(False),
    "nncf MINMAX, fast bias correction": _nncf_variant(True, "MINMAX"),
    "nncf MINMAX, no bias correction": _nncf_variant(None, "MINMAX"),
    "nncf MEAN_QUANTILE, fast bias correction": _nncf_variant(True, "MEAN_QUANTILE"),
    "nncf MINMAX, full bias correction": _nncf_variant(False, "MINMAX"),
    "nncf MINMAX, fast bias correction, 1000 rows": _nncf_variant(True, "MINMAX", subset=1000),
    "mmedge int8, 8-bit weights (before)": _shipped_8bit,
    "mmedge int8 as export builds it (now)": _shipped,
    "ort quantize_static MinMax (peer)": _ort_static,
    "mmedge int8-trt, TensorRT's graph": _tensorrt_graph,
}


def _run(path: Path, threads: int, as_written: bool = False) -> Callable[[Feed], np.ndarray]:
    from mmedge.runtime.backends.ort import create_session
    from mmedge.runtime.precisions import QDQ_AS_FLOAT

    session = create_session(path, threads=threads, disabled_optimizers=QDQ_AS_FLOAT if as_written else ())
    return lambda feed: session.run(None, feed)[0]


def _cosines(ref: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    """Lowest and mean row cosine over every eval row, and the lowest over the first 64 (what
    ``mmedge bench --peers`` quotes: its ``peer_eval`` default)."""
    a, b = np.concatenate(ref).astype(np.float64), np.concatenate(got).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()), "min_cosine_64": float(cos[:64].min())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("bundles/digits-av"))
    ap.add_argument("--calib", type=int, default=1000,
                    help="training rows calibrating the variants (each uses at most its own subset: 300 by default)")
    ap.add_argument("--eval", type=int, default=300, help="held-out rows the cosines are taken on")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--only", default="", help="variant names separated by | (default: all)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    calib, evals = _feeds(args.bundle, args.calib, args.eval)
    fp32 = args.bundle / "encoders/image.fp32.onnx"
    reference = _run(fp32, args.threads)
    ref = [reference(f) for f in evals]
    chosen = {k: v for k, v in VARIANTS.items() if not args.only or k in args.only.split("|")}
    report: dict[str, Any] = {"schema": "mmedge.image_int8_fidelity/1", "command": ["python", *sys.argv],
                              "calib_rows": len(calib), "eval_rows": len(evals), "cpu": _cpu(),
                              "variants": {}}
    with tempfile.TemporaryDirectory(prefix="mmedge-img-int8-") as tmp:
        runs = {}
        for i, (name, build) in enumerate(chosen.items()):
            out = Path(tmp) / f"v{i}.onnx"
            t = time.perf_counter()
            build(fp32, calib, out)
            runs[name] = _run(out, args.threads)
            as_written = _run(out, args.threads, as_written=True)
            written = _cosines(ref, [as_written(f) for f in evals])
            report["variants"][name] = {**_cosines(ref, [runs[name](f) for f in evals]),
                                        **{f"{k}_as_written": v for k, v in written.items()},
                                        "build_s": time.perf_counter() - t}
            print(f"{name}: {report['variants'][name]}", flush=True)
        feed, times = evals[0], {name: [] for name in runs}
        for it in range(args.iters + 10):
            for name, fn in runs.items():
                t = time.perf_counter()
                fn(feed)
                if it >= 10:
                    times[name].append((time.perf_counter() - t) * 1000.0)
        for name, samples in times.items():
            report["variants"][name]["b1_ms"] = statistics.median(samples)
    for name, v in report["variants"].items():
        print(f"{name:42s} min {v['min_cosine']:.4f} (first 64 rows {v['min_cosine_64']:.4f}) "
              f"mean {v['mean_cosine']:.4f}; as written min {v['min_cosine_as_written']:.4f} b1 {v['b1_ms']:.3f} ms")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
