"""``mmedge export``, ``mmedge inspect`` and ``mmedge run``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mmedge.cli import _fail, app, console
from mmedge.errors import MmedgeError


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder written by `mmedge train`."),
    out: Path = typer.Option(Path("bundles/digits-av"), "--out", "-o", help="Bundle folder to write."),
    precision: str = typer.Option("fp32,fp16,int8,int8-trt", help="Comma-separated precisions."),
    calib: Optional[Path] = typer.Option(None, help="Calibration JSONL or folder (default: calibration_data/)."),
    max_drop: float = typer.Option(1.0, help="Largest accepted accuracy drop vs PyTorch, in points."),
    calib_samples: int = typer.Option(200, help="Calibration samples per component."),
    eval_samples: Optional[int] = typer.Option(None, help="Held-out samples evaluated per precision (default: all)."),
) -> None:
    """Export a checkpoint to a bundle: ONNX, parity, FP16, INT8 (NNCF), accuracy report."""
    from mmedge import progress
    from mmedge.export.pipeline import ExportConfig, export_checkpoint

    progress.enable()
    try:
        cfg = ExportConfig(precisions=tuple(p.strip() for p in precision.split(",") if p.strip()), max_drop=max_drop,
                           calib=calib, calib_samples=calib_samples, eval_samples=eval_samples)
        manifest = export_checkpoint(checkpoint, out, config=cfg)
    except MmedgeError as e:
        _fail(e)
    console.print(accuracy_table(manifest))
    console.print(f"bundle written to [bold]{out}[/]")


def accuracy_table(manifest: dict) -> Table:
    """Ensemble and member accuracy per precision, next to PyTorch."""
    metrics = manifest.get("metrics", {})
    members = [m["name"] for m in manifest["members"]]
    table = Table(title=f"{manifest['name']}: accuracy on {metrics.get('samples', '?')} held-out samples")
    for col in ["precision", "status", "ensemble", *members, "drop (pts)", "fallback"]:
        table.add_column(col)
    if "pytorch" in metrics:
        ref = metrics["pytorch"]
        table.add_row("pytorch", "reference", f"{ref['ensemble']:.2%}", *[f"{ref['members'][m]:.2%}" for m in members], "", "")
    for p, status in manifest.get("precisions", {}).items():
        r = metrics.get(p)
        if r is None:
            table.add_row(p, status, *[""] * (len(members) + 3))
            continue
        table.add_row(p, status if len(status) <= 40 else status[:40] + "...", f"{r['ensemble']:.2%}",
                      *[f"{r['members'].get(m, float('nan')):.2%}" for m in members], f"{r['drop_points']:+.2f}",
                      "; ".join(r.get("fallback", [])))
    return table


@app.command()
def inspect(bundle: Path = typer.Argument(..., help="Bundle folder or .mmedge file.")) -> None:
    """Print what a bundle holds: components, precisions, sizes, parity, metrics."""
    from mmedge.runtime import Bundle

    try:
        b = Bundle.open(bundle)
    except MmedgeError as e:
        _fail(e)
    m = b.manifest
    console.print(f"[bold]{m['name']}[/] ({m['format']}): {m['task']}, labels {m['labels']}, "
                  f"modalities {m['modalities']}, ensemble {m['ensemble']['method']}")
    console.print(components_table(m))
    if m.get("metrics"):
        console.print(accuracy_table(m))
    console.print(f"versions: {json.dumps(m.get('versions', {}))}")


def components_table(manifest: dict) -> Table:
    """One row per component and precision: file size, parity / fidelity, quantization."""
    table = Table(title="components")
    for col in ("component", "precision", "MB", "vs reference", "notes"):
        table.add_column(col)
    rows = [(f"encoder.{k}", v["graphs"]) for k, v in manifest["encoders"].items()]
    rows += [(f"head.{mb['name']}", mb["graphs"]) for mb in manifest["members"]]
    for name, graphs in rows:
        for p, g in graphs.items():
            check = g.get("parity") or g.get("fidelity") or {}
            fig = f"max|d| {check.get('max_abs_diff', float('nan')):.2e}, cos {check.get('min_cosine', float('nan')):.5f}" if check else ""
            note = g.get("kept_float") and "kept fp32" or (g.get("quantization") or {}).get("tool", "")
            table.add_row(name, p, f"{g.get('bytes', 0) / 1e6:.2f}", fig, note)
    return table


@app.command()
def run(
    bundle: Path = typer.Argument(..., help="Bundle folder or .mmedge file."),
    image: Optional[Path] = typer.Option(None, help="Image file."),
    text: Optional[str] = typer.Option(None, help="Text."),
    audio: Optional[Path] = typer.Option(None, help="Audio file (wav/flac), any sample rate."),
    precision: str = typer.Option("fp32", help="fp32 | fp16 | int8 | int8-trt"),
    backend: str = typer.Option("auto", help="auto | ort | ort-cuda | ort-trt | tensorrt"),
    as_json: bool = typer.Option(False, "--json", help="Print the prediction as JSON."),
) -> None:
    """Run a bundle on one sample and print the prediction."""
    from mmedge.runtime import Session

    given = {k: v for k, v in {"image": image and str(image), "text": text, "audio": audio and str(audio)}.items() if v is not None}
    try:
        with Session(bundle, precision=precision, backend=backend) as session:
            pred = session.predict(**given)
            labels = list(session.bundle.labels)
    except MmedgeError as e:
        _fail(e)
    result = {"label": pred.label, "probability": pred.probability, "backend": pred.backend, "precision": pred.precision,
              "probabilities": dict(zip(labels, pred.probabilities[0].round(6).tolist())),
              "members": {k: v[0].round(6).tolist() for k, v in pred.member_probabilities.items()},
              "timings_ms": {k: round(v, 3) for k, v in pred.timings_ms.items()}}
    if as_json:
        typer.echo(json.dumps(result))
        return
    console.print(f"[bold]{pred.label}[/] (p={pred.probability:.3f}) — {pred.backend}, {pred.precision}, "
                  f"{pred.timings_ms['total']:.1f} ms")

