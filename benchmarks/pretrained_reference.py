"""Reference-size pretrained dual encoders: export time, bundle size, latency and resident memory.

Architecture-faithful models built offline from their configs with **random weights** (speed and memory
only, no accuracy): CLIP ViT-B/16 at 224 px with its 12-layer text tower, SigLIP base (ViT-B/16 224 px +
12-layer text), CLAP (HTSAT + RoBERTa-base). Each is exported as itself (``export_pretrained``: both towers,
a zero-shot member) and timed side by side, interleaved, with the same threads and inputs:

- the runtime's image (or audio) tower + zero-shot head (``Session.predict``) and its text tower
  (``Session.encode_texts``, cache off, the runtime's own padding), per precision;
- PyTorch eager ``get_*_features`` and ``torch.compile`` of it, on the same preprocessed tensors and the same
  token padding;
- ONNX Runtime's own int8 recipe (``quantize_dynamic``, per-channel s8 weights) of the bundle's fp32 graphs;

numpy limited to one BLAS thread on both sides (``threadpoolctl``); resident memory of a fresh torch-free
process per precision (``mmedge.runtime.footprint``). Writes ``mmedge.pretrained_reference/1`` JSON, rendered
into RESULTS.md by ``benchmarks/render.py``::

    python benchmarks/pretrained_reference.py --family clip --precision fp32,int8 --iters 10 \\
        -o benchmarks/pretrained_reference.json
    python benchmarks/pretrained_reference.py --family siglip --merge   # add or re-measure one family
    python benchmarks/pretrained_reference.py --combine a.json b.json -o benchmarks/pretrained_reference.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmedge.atomic import atomic_write

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "mmedge.pretrained_reference/1"
LABELS = ["person", "cup", "cat", "rocket"]
TEXTS = ["a photo of a person", "a red mug on a table", "a cat sleeping on a sofa", "a rocket on its launch pad",
         "an astronaut in a white suit", "a cup of coffee", "a tabby cat", "a rocket"]


def _tiny():
    """``tests/tiny_pretrained.py`` (its offline tokenizers and processors, reused at full size)."""
    spec = importlib.util.spec_from_file_location("tiny_pretrained", ROOT / "tests" / "tiny_pretrained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_clip(folder: Path) -> str:
    """CLIP ViT-B/16 (openai/clip-vit-base-patch16's config), 224 px, 12-layer 512-wide text tower, 77 tokens."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tok = _tiny().clip_tokenizer(folder, max_length=77)
    config = CLIPConfig(text_config=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                                         num_attention_heads=8, max_position_embeddings=77,
                                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id),
                        vision_config=dict(image_size=224, patch_size=16, hidden_size=768, intermediate_size=3072,
                                           num_hidden_layers=12, num_attention_heads=12), projection_dim=512)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=3,
                       do_center_crop=True, do_convert_rgb=True).save_pretrained(folder)
    CLIPModel(config).eval().save_pretrained(folder)
    return "CLIPModel"


def build_siglip(folder: Path) -> str:
    """SigLIP base (google/siglip-base-patch16-224's config): ViT-B/16 224 px, 12-layer text, 64 tokens."""
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    tok = _tiny().siglip_tokenizer(folder, max_length=64)
    config = SiglipConfig(text_config=dict(vocab_size=32000, hidden_size=768, intermediate_size=3072,
                                           num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=64,
                                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id),
                          vision_config=dict(image_size=224, patch_size=16, hidden_size=768, intermediate_size=3072,
                                             num_hidden_layers=12, num_attention_heads=12))
    SiglipImageProcessorPil(size={"height": 224, "width": 224}, resample=3, image_mean=[0.5] * 3,
                            image_std=[0.5] * 3).save_pretrained(folder)
    SiglipModel(config).eval().save_pretrained(folder)
    return "SiglipModel"


def build_clap(folder: Path) -> str:
    """CLAP (laion/clap-htsat-unfused's config): HTSAT audio at 48 kHz, 10 s, RoBERTa-base text."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    tok = _tiny().roberta_tokenizer(folder, max_length=77)
    config = ClapConfig(text_config=dict(vocab_size=50265, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                         eos_token_id=tok.eos_token_id, max_position_embeddings=514),
                        audio_config=dict(enable_fusion=False), projection_dim=512)
    ClapFeatureExtractor(truncation="rand_trunc", padding="repeatpad").save_pretrained(folder)
    ClapModel(config).eval().save_pretrained(folder)
    return "ClapModel"


def build_clip_tiny(folder: Path) -> str:
    """The tests' tiny CLIP (a smoke run of this script, not a reference size)."""
    _tiny().clip_folder(folder)
    return "CLIPModel"


def build_clap_tiny(folder: Path) -> str:
    """The tests' tiny CLAP (a smoke run of the audio path, not a reference size)."""
    _tiny().clap_folder(folder)
    return "ClapModel"


FAMILIES: dict[str, Callable[[Path], str]] = {"clip": build_clip, "siglip": build_siglip, "clap": build_clap,
                                              "clip-tiny": build_clip_tiny, "clap-tiny": build_clap_tiny}


def _photos(n: int) -> list[np.ndarray]:
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    return [np.ascontiguousarray(src[10 * i: 10 * i + 280, 15 * i: 15 * i + 360]) for i in range(n // 4 + 1)
            for src in sources][:n]


def _clips(n: int, rate: int = 48000) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(rate * 4) / rate
    return [(0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
            for i in range(n)]


def _sizes(bundle: Path, precisions: list[str]) -> dict[str, int]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    owners = [e["graphs"] for e in manifest["encoders"].values()] + [m["graphs"] for m in manifest["members"]]
    return {p: sum((bundle / g[p]["file"]).stat().st_size for g in owners if p in g) for p in precisions}


def export(folder: Path, out: Path, query: str, precisions: list[str], calib: int) -> float:
    """Exports the folder as itself; returns the wall-clock seconds."""
    from mmedge.export.exporter import ExportConfig
    from mmedge.export.pretrained import export_pretrained

    samples = [{"image": p} for p in _photos(calib)] if query == "image" else [{"audio": c} for c in _clips(calib)]
    start = time.perf_counter()
    export_pretrained(folder, labels=LABELS, prompts=["a photo of a {}"], calib=samples, out=out,
                      config=ExportConfig(precisions=tuple(precisions), calib_samples=calib, max_drop=100.0))
    return time.perf_counter() - start


def _ort_recipe(src: Path, dst: Path) -> Path:
    """ONNX Runtime's own int8 recipe for transformer encoders: ``quantize_dynamic``, per-channel s8 weights."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return dst


def _variants(cls: str, folder: Path, bundle: Path, query: str, precisions: list[str], batch: int, threads: int,
              compile_torch: bool, work: Path) -> dict[str, Callable[[], Any]]:
    """name -> a call to time, every variant on the same inputs (preprocessed once, the runtime's way)."""
    import torch
    import transformers

    from mmedge.runtime import Session
    from mmedge.runtime.backends.ort import create_session

    inputs = {"image": _photos(batch)} if query == "image" else {"audio": _clips(batch), "audio_rate": 48000}
    texts = TEXTS[:batch]
    calls: dict[str, Callable[[], Any]] = {}
    for p in precisions:
        s = Session(bundle, precision=p, threads=threads, text_cache_size=0)
        calls[f"mmedge {p} {query}"] = lambda s=s: s.predict(**inputs)
        calls[f"mmedge {p} text"] = lambda s=s: s.encode_texts(texts)
    s = Session(bundle, precision="fp32", threads=threads)
    arrays = s._preprocessors[query](_loaded(query, inputs, s))
    tokens = s._preprocessors["text"](texts)
    model = getattr(transformers, cls).from_pretrained(str(folder)).eval()
    torch.set_num_threads(threads)
    feats = getattr(model, f"get_{query}_features")  # get_image_features / get_audio_features
    tq = {k: torch.from_numpy(v) for k, v in arrays.items()}
    tt = {k: torch.from_numpy(v) for k, v in tokens.items()}
    calls[f"pytorch eager {query}"] = lambda: _no_grad(feats, tq)
    calls["pytorch eager text"] = lambda: _no_grad(model.get_text_features, tt)
    if compile_torch:
        cq, ct = torch.compile(feats), torch.compile(model.get_text_features)
        calls[f"torch.compile {query}"] = lambda: _no_grad(cq, tq)
        calls["torch.compile text"] = lambda: _no_grad(ct, tt)
    for tower, feed in ((query, arrays), ("text", tokens)):
        graph = _ort_recipe(bundle / f"encoders/{tower}.fp32.onnx", work / f"{tower}.ort-dynamic.onnx")
        sess = create_session(str(graph), threads=threads)
        names = [i.name for i in sess.get_inputs()]
        calls[f"onnxruntime quantize_dynamic {tower}"] = lambda sess=sess, f=feed, n=names: sess.run(None, {k: f[k] for k in n})
    return calls


def _loaded(query: str, inputs: dict[str, Any], session) -> list:
    from mmedge.runtime.modalities import InputOptions, get_modality

    options = InputOptions(audio_rate=inputs.get("audio_rate"))
    return get_modality(query).prepare(inputs[query], options, session.limits)


def _no_grad(fn, kwargs):
    import torch

    with torch.inference_mode():
        return fn(**kwargs)


def measure(cls: str, folder: Path, bundle: Path, query: str, precisions: list[str], batches: list[int], threads: int,
            iters: int, compile_torch: bool) -> dict[str, Any]:
    """Median / p90 milliseconds per variant and batch, interleaved, numpy on one BLAS thread."""
    from threadpoolctl import threadpool_limits

    from mmedge.runtime.timing import LatencyStats, run_interleaved

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1, user_api="blas"):
        for batch in batches:
            calls = _variants(cls, folder, bundle, query, precisions, batch, threads, compile_torch, Path(tmp))
            samples = run_interleaved(calls, iters=iters, warmup=2)
            out[str(batch)] = {n: LatencyStats.from_samples(v, batch=batch).to_dict() for n, v in samples.items()}
    return out


def footprint(bundle: Path, query: str, precisions: list[str], threads: int) -> dict[str, Any]:
    """Resident memory of a fresh torch-free process per precision (one prediction)."""
    from mmedge.runtime.footprint import measure_footprint

    inputs = {"image": _photos(1)} if query == "image" else {"audio": _clips(1), "audio_rate": 48000}
    return {p: measure_footprint(bundle, p, inputs, threads=threads) for p in precisions}


RUN_FIELDS = ("command", "created_utc", "threads", "iters")  # what each family's record says of the run that measured it


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report holding every family of ``reports``: a later report's family replaces an earlier one's; each
    family keeps the command, date, threads and iterations of the run that measured it (``RUN_FIELDS``,
    copied from its report's top level when the family lacks them). The top level is the last report's."""
    merged: dict[str, Any] = {**reports[-1], "families": {}}
    for report in reports:
        if report.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} report (schema {report.get('schema')!r}); pass this script's -o files")
        for family, rec in report["families"].items():
            merged["families"][family] = {**{k: report[k] for k in RUN_FIELDS if k in report}, **rec}
    return merged


def _write(report: dict[str, Any], out: Path, merge: bool) -> None:
    if merge and out.is_file():
        report = merge_reports([json.loads(out.read_text()), report])
    atomic_write(out, json.dumps(report, indent=1) + "\n")


def _measure_family(family: str, args: argparse.Namespace, precisions: list[str], batches: list[int]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder, bundle = Path(tmp) / "model", Path(tmp) / "bundle"
        folder.mkdir()
        cls = FAMILIES[family](folder)
        query = "audio" if family.startswith("clap") else "image"
        seconds = export(folder, bundle, query, precisions, args.calib)
        print(f"{family}: exported in {seconds:.0f} s", flush=True)
        return {"class": cls, "query": query, "export_s": round(seconds, 1), "bundle_bytes": _sizes(bundle, precisions),
                "latency_ms": measure(cls, folder, bundle, query, precisions, batches, args.threads, args.iters,
                                      not args.no_compile),
                "footprint": footprint(bundle, query, precisions, args.threads)}


def main(argv: list[str] | None = None) -> int:
    """Builds, exports and measures each family asked for; writes (or merges into) the JSON report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="clip", help=f"comma-separated: {', '.join(FAMILIES)}")
    p.add_argument("--precision", default="fp32,int8")
    p.add_argument("--batch", default="1,8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--calib", type=int, default=16, help="calibration samples")
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    p.add_argument("--merge", action="store_true",
                   help="keep the families already in -o's report (those measured now replace theirs)")
    p.add_argument("--combine", nargs="+", type=Path, metavar="REPORT",
                   help="measure nothing: merge these reports (later families win) into -o, with --merge into it too")
    p.add_argument("-o", "--out", default=str(ROOT / "benchmarks" / "pretrained_reference.json"))
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.combine:
        _write(merge_reports([json.loads(f.read_text()) for f in args.combine]), out, args.merge)
        print(f"wrote {out} from {', '.join(map(str, args.combine))}")
        return 0
    precisions, batches = args.precision.split(","), [int(b) for b in args.batch.split(",")]
    run = {"command": "python benchmarks/pretrained_reference.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "threads": args.threads,
           "iters": args.iters}
    report: dict[str, Any] = {"schema": SCHEMA, **run, "weights": "random (speed and memory only)", "families": {}}
    from mmedge.runtime.probes import environment

    report["environment"] = environment(args.threads)
    for family in args.family.split(","):
        report["families"][family] = {**run, **_measure_family(family, args, precisions, batches)}
        _write(report, out, args.merge)
        print(f"{family}: measured; wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
