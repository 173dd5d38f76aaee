"""``mmedge export`` (workstation side: needs ``mmedge[export]``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmedge.cli.console import console, fail, split_list
from mmedge.cli.tables import accuracy_table
from mmedge.errors import MmedgeError


def export(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder written by `mmedge train`, or hf:PATH: a CLIP, "
                                               "SigLIP or CLAP folder exported as itself with a zero-shot member "
                                               "(--labels, --prompt; docs/pretrained_models.md)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Bundle folder to write (default: "
                                                                 "bundles/<the checkpoint folder's name>)."),
    precision: Optional[str] = typer.Option(None, help="Comma-separated precisions (default: every registered one; "
                                                       "mixed: per component, the fastest CPU graph, on ONNX "
                                                       "Runtime or OpenVINO, within --max-drop)."),
    calib: Optional[Path] = typer.Option(None, help="Calibration JSONL or folder (default: calibration_data/)."),
    max_drop: float = typer.Option(1.0, help="Largest accepted accuracy drop vs PyTorch, in points."),
    calib_samples: int = typer.Option(200, help="Calibration samples per component."),
    eval_samples: Optional[int] = typer.Option(None, help="Held-out samples evaluated per precision (default: all)."),
    labels: Optional[str] = typer.Option(None, help="hf:PATH: comma-separated class names of the zero-shot member."),
    prompt: Optional[list[str]] = typer.Option(None, help="hf:PATH: a prompt template with {} for the label, e.g. "
                                                         "'a photo of a {}' (repeatable: averaged)."),
    eval_data: Optional[Path] = typer.Option(None, help="hf:PATH: labelled JSONL for the accuracy report."),
) -> None:
    """Export a checkpoint to a bundle: ONNX, parity, FP16, INT8 (NNCF), accuracy report."""
    from mmedge import progress
    from mmedge.export.exporter import ExportConfig

    progress.enable()
    out = out if out is not None else Path("bundles") / Path(str(checkpoint).removeprefix("hf:")).resolve().name
    try:
        chosen = {} if precision is None else {"precisions": split_list(precision, "--precision")}
        cfg = ExportConfig(**chosen, max_drop=max_drop, calib=calib, calib_samples=calib_samples,
                           eval_samples=eval_samples)
        manifest = _export(checkpoint, out, cfg, labels, prompt, eval_data)
    except MmedgeError as e:
        fail(e)
    console.print(accuracy_table(manifest))
    console.print(f"bundle written to [bold]{out}[/]")


def _export(checkpoint: Path, out: Path, cfg, labels: Optional[str], prompts: Optional[list[str]],
            eval_data: Optional[Path]) -> dict:
    """A checkpoint's export, or a pretrained folder's (``hf:PATH``) with its zero-shot member."""
    from mmedge.errors import ConfigError
    from mmedge.export.exporter import export_checkpoint
    from mmedge.hf_folder import is_hf_name

    if not is_hf_name(str(checkpoint)):
        if labels or prompts or eval_data:
            raise ConfigError("--labels, --prompt and --eval-data are for hf:PATH (a pretrained CLIP, SigLIP or CLAP "
                              "folder); a checkpoint brings its own labels and data")
        return export_checkpoint(checkpoint, out, config=cfg)
    from mmedge.export.pretrained import export_pretrained

    if not labels:
        raise ConfigError(f"{checkpoint} needs the zero-shot member's classes: --labels cat,dog,...")
    return export_pretrained(str(checkpoint), labels=split_list(labels, "--labels"), prompts=prompts or ("{}",),
                             out=out, calib=cfg.calib, eval_data=eval_data, config=cfg)


def register(app: typer.Typer) -> None:
    """Adds ``export`` to ``app``."""
    app.command()(export)
