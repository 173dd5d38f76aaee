"""``mmedge export`` (workstation side: needs ``mmedge[export]``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmedge.cli.console import console, fail, split_list
from mmedge.cli.tables import accuracy_table
from mmedge.errors import MmedgeError


def export(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder written by `mmedge train`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Bundle folder to write (default: "
                                                                 "bundles/<the checkpoint folder's name>)."),
    precision: Optional[str] = typer.Option(None, help="Comma-separated precisions (default: every registered one; "
                                                       "mixed: per component, the fastest CPU graph within "
                                                       "--max-drop)."),
    calib: Optional[Path] = typer.Option(None, help="Calibration JSONL or folder (default: calibration_data/)."),
    max_drop: float = typer.Option(1.0, help="Largest accepted accuracy drop vs PyTorch, in points."),
    calib_samples: int = typer.Option(200, help="Calibration samples per component."),
    eval_samples: Optional[int] = typer.Option(None, help="Held-out samples evaluated per precision (default: all)."),
) -> None:
    """Export a checkpoint to a bundle: ONNX, parity, FP16, INT8 (NNCF), accuracy report."""
    from mmedge import progress
    from mmedge.export.exporter import ExportConfig, export_checkpoint

    progress.enable()
    out = out if out is not None else Path("bundles") / checkpoint.resolve().name
    try:
        chosen = {} if precision is None else {"precisions": split_list(precision, "--precision")}
        cfg = ExportConfig(**chosen, max_drop=max_drop, calib=calib, calib_samples=calib_samples,
                           eval_samples=eval_samples)
        manifest = export_checkpoint(checkpoint, out, config=cfg)
    except MmedgeError as e:
        fail(e)
    console.print(accuracy_table(manifest))
    console.print(f"bundle written to [bold]{out}[/]")


def register(app: typer.Typer) -> None:
    """Adds ``export`` to ``app``."""
    app.command()(export)
