"""``mmedge inspect`` and ``mmedge run``: the device side, torch-free (the base install)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mmedge.cli.console import console, fail
from mmedge.cli.tables import accuracy_table, components_table
from mmedge.errors import MmedgeError


def inspect(bundle: Path = typer.Argument(..., help="Bundle folder or .mmedge file.")) -> None:
    """Print what a bundle holds: components, precisions, sizes, parity, metrics."""
    from mmedge.runtime import Bundle

    try:
        b = Bundle.open(bundle)
    except MmedgeError as e:
        fail(e)
    m = b.manifest
    console.print(f"[bold]{b.name}[/] ({m['format']}): {m['task']}, labels {m['labels']}, "
                  f"modalities {m['modalities']}, ensemble {m['ensemble']['method']}")
    console.print(components_table(m))
    if m.get("metrics"):
        console.print(accuracy_table(m))
    console.print(f"versions: {json.dumps(m.get('versions', {}))}")


def run(
    bundle: Path = typer.Argument(..., help="Bundle folder or .mmedge file."),
    image: Optional[Path] = typer.Option(None, help="Image file."),
    text: Optional[str] = typer.Option(None, help="Text."),
    audio: Optional[Path] = typer.Option(None, help="Audio file (wav/flac), any sample rate."),
    precision: str = typer.Option("fp32", help="fp32 | fp16 | int8 | int8-trt | int8-fp16-trt"),
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
        fail(e)
    result = {"label": pred.label, "probability": pred.probability, "backend": pred.backend, "precision": pred.precision,
              "probabilities": dict(zip(labels, pred.probabilities[0].round(6).tolist())),
              "members": {k: v[0].round(6).tolist() for k, v in pred.member_probabilities.items()},
              "timings_ms": {k: round(v, 3) for k, v in pred.timings_ms.items()}}
    if as_json:
        typer.echo(json.dumps(result))
        return
    console.print(f"[bold]{pred.label}[/] (p={pred.probability:.3f}) — {pred.backend}, {pred.precision}, "
                  f"{pred.timings_ms['total']:.1f} ms")



def register(app: typer.Typer) -> None:
    """Adds ``inspect`` and ``run`` to ``app``."""
    app.command()(inspect)
    app.command()(run)
