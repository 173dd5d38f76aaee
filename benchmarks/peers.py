"""Every encoder of a bundle against the recipe a user would ship instead, in one run.

For each encoder of the bundle, on the same weights (the checkpoint's), the same input sizes
and real held-out inputs of the bundle's dataset, timed interleaved (batch 1 and 8, warm-up
excluded, medians) with the same thread count:

- PyTorch eager and ``torch.compile`` (the checkpoint's module);
- mmedge fp32 and int8 (the bundle's graphs, opened by the runtime's session factory);
- the peer: for a transformer text encoder, Optimum's CPU recipe (legacy ONNX export,
  ONNX Runtime's BERT optimizer, ``quantize_dynamic`` per-channel); for the others, ONNX
  Runtime's ``quantize_static`` (QDQ, u8 activations, s8 per-channel weights) on the
  bundle's fp32 graph, calibrated on training rows.

Fidelity is the pooled output's cosine to PyTorch fp32 on the held-out rows; the floor is
the fp32 graph's FLOPs over the measured int8 / fp32 matmul peak. Writes ``mmedge.peers/1``
JSON (rendered into RESULTS.md by ``benchmarks/make_results.py``).

    python benchmarks/peers.py --bundle bundles/digits-av --checkpoint runs/digits-av --json benchmarks/peers.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

Feed = dict[str, np.ndarray]


def _pooled_fn_torch(module: Any, names: tuple[str, ...]) -> Callable[[Feed], np.ndarray]:
    import torch

    def run(feed: Feed) -> np.ndarray:
        with torch.inference_mode():
            out = module(*[torch.from_numpy(feed[n]) for n in names])
        return (out[0] if isinstance(out, (tuple, list)) else out).numpy()

    return run


def _pooled_fn_ort(path: Path, threads: int) -> Callable[[Feed], np.ndarray]:
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


def _cosines(ref: Callable[[Feed], np.ndarray], fn: Callable[[Feed], np.ndarray], evals: list[Feed]) -> dict:
    cos = []
    for feed in evals:
        a, b = ref(feed).astype(np.float64), fn(feed).astype(np.float64)
        cos += list((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12))
    return {"min": float(np.min(cos)), "mean": float(np.mean(cos))}


def _variants(m: str, enc: Any, bundle: Any, args: argparse.Namespace, calib: list[Feed], work: Path
              ) -> dict[str, Callable[[Feed], np.ndarray]]:
    import torch

    names = tuple(enc.input_names)
    graphs = bundle.encoders[m].graphs
    out = {"pytorch eager": _pooled_fn_torch(enc, names),
           "torch.compile": _pooled_fn_torch(torch.compile(enc, dynamic=False), names),
           "mmedge fp32": _pooled_fn_ort(bundle.root / graphs["fp32"].file, args.threads),
           "mmedge int8": _pooled_fn_ort(bundle.root / graphs["int8"].file, args.threads)}
    if m == "text":
        out["peer: Optimum CPU recipe"] = _pooled_fn_ort(_optimum_text(enc, calib[0], work), args.threads)
    else:
        peer = _ort_static(bundle.root / graphs["fp32"].file, calib, work, m)
        out["peer: ORT quantize_static QDQ"] = _pooled_fn_ort(peer, args.threads)
    return out


def _time(variants: dict[str, Callable[[Feed], np.ndarray]], feed: Feed, args: argparse.Namespace) -> dict:
    from mmedge.runtime.timing import run_interleaved

    samples = run_interleaved({k: (lambda f=f: f(feed)) for k, f in variants.items()}, iters=args.iters,
                              warmup=args.warmup, rng_seed=0)
    return {k: float(np.median(v)) for k, v in samples.items()}


def _floor(fp32: Path, feed: Feed, peaks: dict[str, float]) -> dict[str, float]:
    from mmedge.export.flops import count_flops

    flops = count_flops(fp32, {k: v.shape for k, v in feed.items()}).flops
    return {"flops": float(flops), **{f"floor_ms_{k}": flops / (g * 1e9) * 1e3 for k, g in peaks.items()}}


def _encoder_report(m: str, enc: Any, bundle: Any, data: Any, ref: Any, args: argparse.Namespace, peaks: dict
                    ) -> dict[str, Any]:
    from mmedge.features import modality_inputs

    test, train = np.asarray(data.splits["test"]), np.asarray(data.splits["train"])
    inputs = lambda rows: modality_inputs(data, m, list(rows), ref.recipe, ref.tokenizer_file)  # noqa: E731
    calib = [inputs(train[i:i + 1]) for i in range(args.calib)]
    evals = [inputs(test[i:i + 8]) for i in range(0, args.eval, 8)]
    with tempfile.TemporaryDirectory(prefix=f"peers-{m}-") as tmp:
        variants = _variants(m, enc, bundle, args, calib, Path(tmp))
        fidelity = {k: _cosines(variants["pytorch eager"], f, evals) for k, f in variants.items()}
        batches = {}
        for b in args.batches:
            feed = inputs(test[:b])
            batches[str(b)] = {"median_ms": _time(variants, feed, args),
                               **_floor(bundle.root / bundle.encoders[m].graphs["fp32"].file, feed, peaks)}
            print(f"{m} b{b}: " + ", ".join(f"{k} {v:.2f}" for k, v in batches[str(b)]["median_ms"].items()), flush=True)
    return {"encoder": bundle.encoders[m].name, "fidelity_vs_pytorch_fp32": fidelity, "batches": batches}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("bundles/digits-av"))
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/digits-av"))
    ap.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib", type=int, default=64, help="training rows calibrating the ORT static peer")
    ap.add_argument("--eval", type=int, default=64, help="held-out rows for fidelity")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/peers.json"))
    args = ap.parse_args()

    from mmedge.evaluation import TorchReference
    from mmedge.export.flops import matmul_peak
    from mmedge.runtime import Bundle
    from mmedge.training import load_recipe_data

    ref = TorchReference.from_checkpoint(args.checkpoint, threads=args.threads)
    data = load_recipe_data(ref.recipe, seed=ref.meta.get("dataset", {}).get("seed", 0))
    peaks = {k: matmul_peak(k, threads=args.threads).gops for k in ("fp32", "int8")}
    with Bundle.open(args.bundle) as bundle:
        report = {m: _encoder_report(m, ref.model.encoders[m], bundle, data, ref, args, peaks)
                  for m in bundle.encoders}
    args.json.write_text(json.dumps({
        "schema": "mmedge.peers/1", "command": " ".join(["python", *sys.argv]),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "threads": args.threads,
        "iters": args.iters, "warmup": args.warmup, "peaks_gops": peaks, "encoders": report}, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
