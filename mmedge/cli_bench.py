"""The ``mmedge bench`` command: runs ``mmedge.benchmark.run_bench``; rich tables, JSON, PNG plot."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import typer
from rich.table import Table

from mmedge.cli import _fail, app, console, err_console
from mmedge.errors import ConfigError, MmedgeError

__all__ = ["bench", "summary_table", "stage_table", "comparison_table", "plot_latency"]


def _split(value: str, flag: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise ConfigError(f"{flag} needs at least one value, e.g. {flag} fp32,int8")
    return items


def _ints(value: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in _split(value, flag))
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated integers, got {value!r}") from None


@app.command("bench")
def bench(
    bundle: Path = typer.Argument(..., help="Bundle folder or .mmedge file."),
    precision: str = typer.Option("fp32", help="Comma-separated precisions: fp32,fp16,int8,int8-trt."),
    backend: str = typer.Option("ort", help="Comma-separated backends: ort,tensorrt,ort-cuda,ort-trt."),
    batch: str = typer.Option("1", help="Comma-separated batch sizes, e.g. 1,8."),
    iters: int = typer.Option(50, help="Timed iterations per configuration."),
    warmup: int = typer.Option(5, help="Untimed warm-up iterations (excluded from every statistic)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for ORT and torch (default: all cores)."),
    baseline: Optional[str] = typer.Option(None, help="'torch': time the checkpoint's PyTorch ensemble too."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint for --baseline torch (default: the "
                                                         "bundle's source_checkpoint)."),
    data: Optional[str] = typer.Option(None, help="Dataset name or JSONL file (default: the bundle's dataset)."),
    accuracy_samples: int = typer.Option(200, help="Test samples for the accuracy check (0: skip)."),
    members_compare: bool = typer.Option(True, "--members-compare/--no-members-compare",
                                         help="Also time the best single member, to compare with the ensemble."),
    seed: int = typer.Option(0, help="Seed of the interleaving order and the accuracy subset."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the JSON report here."),
    plot: Optional[Path] = typer.Option(None, help="Write a latency-distribution PNG here."),
) -> None:
    """Benchmark a bundle: latency, per-stage times, memory, accuracy, roofline, vs PyTorch."""
    from mmedge.benchmark import BenchOptions, run_bench, write_json

    try:
        opts = BenchOptions(
            bundle=bundle, precisions=_split(precision, "--precision"), backends=_split(backend, "--backend"),
            batches=_ints(batch, "--batch"), iters=iters, warmup=warmup, threads=threads or (os.cpu_count() or 1),
            baseline=baseline, checkpoint=checkpoint, data=data, accuracy_samples=accuracy_samples,
            members_compare=members_compare, seed=seed, command=tuple(["mmedge", "bench", *sys.argv[2:]])
            if len(sys.argv) > 1 and sys.argv[1] == "bench" else tuple(sys.argv))
        report = run_bench(opts, log=lambda msg: err_console.print(f"[dim]{msg}[/]"))
    except MmedgeError as e:
        _fail(e)
    _print_report(report)
    if json_out is not None:
        console.print(f"JSON report written to [bold]{write_json(report, json_out)}[/]")
    if plot is not None:
        console.print(f"latency plot written to [bold]{plot_latency(report, plot)}[/]")


def _print_report(report: Mapping[str, Any]) -> None:
    env, info = report["environment"], report["bundle"]
    console.print(f"[bold]{info['name']}[/] ({info['size_bytes'] / 1e6:.1f} MB, sha256 {info['sha256'][:12]}) on "
                  f"{env['cpu_model']}, {env['threads']['ort_intra_op']} threads; medians of "
                  f"{report['settings']['iters']} interleaved runs, {report['settings']['warmup']} warm-up excluded")
    console.print(summary_table(report))
    for batch in report["settings"]["batches"]:
        console.print(stage_table(report, batch))
    if report["comparisons"]:
        console.print(comparison_table(report))
    for line in _extra_lines(report):
        console.print(line)


def _peak_line(peak: Mapping[str, Any]) -> str:
    parts = [f"{k} {v['gops']:.0f} GOP/s" for k, v in peak.items() if isinstance(v, dict)]
    return "matrix-multiply peak: " + ", ".join(parts)


def _extra_lines(report: Mapping[str, Any]) -> list[str]:
    lines = [f"import: {i['statement']!r} {i['median_ms']:.1f} ms (fresh interpreter"
             f"{'; pulled in torch!' if i['torch_imported'] else ', no torch'})" for i in report["import"]]
    lines.append(_peak_line(report["peak"]))
    if report["flops"]["per_sample"] is None:
        lines.append(f"roofline: {report['flops']['note']}")
    mem = report["memory"]
    lines.append(f"peak RSS {mem['peak_rss_bytes'] / 2**20:.0f} MiB (start {mem['rss_start_bytes'] / 2**20:.0f} MiB)")
    tegra = report["device"]["tegrastats"]
    lines.append("tegrastats: " + (tegra.get("note", "") if not tegra["available"] else
                                   f"GPU load {tegra['gpu_load_pct']}, power mW {tegra['power_mw_mean']}"))
    return lines


def _accuracy_of(report: Mapping[str, Any], cfg: Mapping[str, Any]) -> str:
    if cfg["kind"] == "torch":
        acc = report["accuracy"].get("torch/eager")
        return f"{acc['ensemble']:.1%}" if acc else "-"
    acc = report["accuracy"].get(f"{cfg['precision']}/{cfg['backend']}")
    if not acc:
        return "-"
    value = acc["ensemble"] if cfg["kind"] == "ensemble" else acc["members"].get(cfg["members"][0])
    return f"{value:.1%}" if value is not None else "-"


def summary_table(report: Mapping[str, Any]) -> Table:
    """One row per configuration: end-to-end latency, throughput, load, memory, roofline, accuracy."""
    table = Table(title="end-to-end latency (ms)")
    for col in ("configuration", "p50", "p90", "p99", "mean", "min", "max", "samples/s", "load ms", "RSS Δ MiB",
                "% of peak", "accuracy"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for cfg in report["configs"]:
        lat, roof = cfg["latency_ms"], cfg["roofline"]
        pct = f"{roof['compute']['pct_of_peak']:.1f}" if roof else "-"
        table.add_row(cfg["id"], *(f"{lat[k]:.2f}" for k in ("p50", "p90", "p99", "mean", "min", "max")),
                      f"{lat['throughput_per_s']:.1f}", f"{cfg['load_ms']:.0f}",
                      f"{cfg['rss_delta_bytes'] / 2**20:.0f}", pct, _accuracy_of(report, cfg))
    table.caption = "% of peak: FLOPs of the encoders and heads / their summed median stage time, vs the measured " \
                    "matrix-multiply peak (int8 peak for int8 on ort)"
    return table


def stage_table(report: Mapping[str, Any], batch: int) -> Table:
    """Median (p90) milliseconds per stage, one column per configuration at ``batch``."""
    configs = [c for c in report["configs"] if c["batch"] == batch]
    stages = list(dict.fromkeys(s for c in configs for s in c["stages_ms"]))
    table = Table(title=f"per-stage p50 (p90) ms, batch {batch}")
    table.add_column("stage")
    for c in configs:
        table.add_column(c["id"].rsplit("/b", 1)[0], justify="right")
    for stage in stages:
        cells = [f"{c['stages_ms'][stage]['p50']:.2f} ({c['stages_ms'][stage]['p90']:.2f})"
                 if stage in c["stages_ms"] else "-" for c in configs]
        table.add_row(stage, *cells)
    return table


def comparison_table(report: Mapping[str, Any]) -> Table:
    """Ratios of medians from the same interleaved run (< 1: the numerator is faster)."""
    table = Table(title="ratios of medians (interleaved A/B; < 1 = faster)")
    for col in ("comparison", "batch", "total", "per stage"):
        table.add_column(col, justify="left" if col in ("comparison", "per stage") else "right")
    for c in report["comparisons"]:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in c["stage_ratios_p50"].items() if k != "total")
        table.add_row(c["name"], str(c["batch"]), f"{c['ratio_p50']:.2f}", stages)
    return table


def plot_latency(report: Mapping[str, Any], path: Path) -> Path:
    """Box plots of the latency samples of every configuration (one panel per batch size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches: Sequence[int] = report["settings"]["batches"]
    old = tuple(int(v) for v in matplotlib.__version__.split(".")[:2]) < (3, 10)
    horizontal: dict[str, Any] = {"vert": False} if old else {"orientation": "horizontal"}
    fig, axes = plt.subplots(len(batches), 1, figsize=(9, 1.2 + 0.45 * len(report["configs"])), squeeze=False)
    for ax, b in zip(axes[:, 0], batches):
        configs = [c for c in report["configs"] if c["batch"] == b]
        ax.boxplot([c["samples_ms"] for c in configs], showfliers=True, **horizontal)
        ax.set_yticks(range(1, len(configs) + 1), [c["id"].rsplit("/b", 1)[0] for c in configs], fontsize=8)
        ax.set_xlabel("end-to-end latency (ms)")
        ax.set_title(f"{report['bundle']['name']}, batch {b}, {report['settings']['threads']} threads", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
