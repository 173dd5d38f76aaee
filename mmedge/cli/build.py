"""``mmedge build``: TensorRT engines for a bundle, on the device (needs ``mmedge[tensorrt]``).

Without TensorRT it exits with status 2 and says what is missing and that ``mmedge run`` /
``Session`` run the same bundle on ONNX Runtime.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from mmedge.cli.console import console, fail, split_list
from mmedge.errors import MmedgeError
from mmedge.runtime.precisions import tensorrt_precisions

__all__ = ["build", "register", "engines_table"]


def build(
    bundle: Path = typer.Argument(..., help="Bundle folder or .mmedge file."),
    precision: str = typer.Option("best", help=f"Comma-separated: {','.join(tensorrt_precisions())}, or best (the "
                                               f"fastest the bundle has: {' > '.join(tensorrt_precisions())})."),
    max_batch: int = typer.Option(8, help="Largest batch the engines accept."),
    opt_batch: int = typer.Option(1, help="Batch TensorRT tunes its kernels for."),
    workspace: Optional[int] = typer.Option(None, help="Builder workspace in MiB (default: 1/2 of free device "
                                                       "memory, 1/4 on Jetson; at most 4 GiB)."),
    opt_level: int = typer.Option(3, help="TensorRT builder optimization level, 0 (fast build) to 5."),
    engine_dir: Optional[Path] = typer.Option(None, help="Engine root (default: BUNDLE/engines, or "
                                                         "FILE.mmedge.engines beside a .mmedge file)."),
    force: bool = typer.Option(False, "--force", help="Rebuild engines that are up to date."),
) -> None:
    """Build TensorRT engines for a bundle on this device (strongly typed, from the bundle's own graphs)."""
    from mmedge.export.engine_build import build_engines, require_tensorrt
    from mmedge.export.engine_config import BuildConfig

    try:
        config = BuildConfig(precisions=split_list(precision, "--precision"), max_batch=max_batch,
                             opt_batch=opt_batch, workspace_mb=workspace, opt_level=opt_level,
                             engine_dir=engine_dir, force=force)
        require_tensorrt(bundle)
        with _Display() as display:
            report = build_engines(bundle, config, on_event=display.event)
    except MmedgeError as e:
        fail(e)
    console.print(f"{report.device.describe()}: engines in [bold]{report.root / report.device.key}[/] "
                  f"(workspace {report.workspace_bytes >> 20} MiB, timing cache {report.timing_cache.name})")
    console.print(engines_table(report))


class _Display:
    """A rich progress row per engine on a terminal, plain lines otherwise (CI logs, ``> log``)."""

    def __init__(self) -> None:
        self._rich = sys.stdout.isatty()
        self._progress: Any = None
        self._tasks: dict[Path, Any] = {}

    def __enter__(self) -> "_Display":
        if self._rich:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                      console=console)
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def event(self, phase: str, job: Any, result: Any) -> None:
        """``("start" | "done", job, result)`` from ``build_engines``."""
        what = f"{job.component} {'/'.join(job.precisions)}"
        if phase == "start":
            line = f"building {what} ({job.stale})" if job.stale else f"{what}: up to date"
        else:
            line = f"{what}: built in {result.seconds:.1f} s, {result.engine_bytes / 1e6:.1f} MB" if result.built \
                else f"{what}: up to date ({result.engine_bytes / 1e6:.1f} MB)"
        if self._progress is None:
            console.print(line, highlight=False)
        elif phase == "start":
            self._tasks[job.engine] = self._progress.add_task(line, total=1)
        else:
            self._progress.update(self._tasks[job.engine], description=line, completed=1)


def engines_table(report: Any) -> Table:
    """Component, precision, build time and engine size of each engine of a build."""
    table = Table(title=f"TensorRT engines: {', '.join(report.precisions)}")
    for col, justify in (("component", "left"), ("precision", "left"), ("source graph", "left"),
                         ("build s", "right"), ("engine MB", "right"), ("status", "left")):
        table.add_column(col, justify=justify)
    for r in report.results:
        table.add_row(r.job.component, "/".join(r.job.precisions), r.job.source_rel,
                      f"{r.seconds:.1f}" if r.built else "-", f"{r.engine_bytes / 1e6:.2f}",
                      "built" if r.built else "up to date")
    return table


def register(app: typer.Typer) -> None:
    """Adds ``build`` to ``app``."""
    app.command("build")(build)
