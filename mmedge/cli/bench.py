"""``mmedge bench``: runs ``mmedge.bench.run_bench``; rich tables, JSON, PNG plot."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from mmedge.bench.options import option_default as _d
from mmedge.cli.console import console, err_console, fail, int_list, split_list
from mmedge.cli.tables import print_bench_report
from mmedge.errors import MmedgeError


def _csv(name: str) -> str:
    """A tuple default of ``BenchOptions`` as the comma-separated text its option takes."""
    return ",".join(str(v) for v in _d(name))


def _command() -> tuple[str, ...]:
    """The command line recorded in the report."""
    return ("mmedge", "bench", *sys.argv[2:]) if len(sys.argv) > 1 and sys.argv[1] == "bench" else tuple(sys.argv)


def bench(
    bundle: Path = typer.Argument(..., help="Bundle folder or .mmedge file."),
    precision: str = typer.Option(_csv("precisions"), help="Comma-separated precisions the bundle has (`mmedge "
                                                           "inspect` lists them)."),
    backend: str = typer.Option(_csv("backends"), help="Comma-separated backends (an unknown one is refused with "
                                                       "the list of those registered)."),
    batch: str = typer.Option(_csv("batches"), help="Comma-separated batch sizes, e.g. 1,8."),
    iters: int = typer.Option(_d("iters"), help="Timed iterations per configuration."),
    warmup: int = typer.Option(_d("warmup"), help="Untimed warm-up iterations (excluded from every statistic)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for ORT and torch (default: all cores)."),
    baseline: Optional[str] = typer.Option(_d("baseline"), help="'torch': time the checkpoint's PyTorch ensemble too, "
                                                                "interleaved in this process; 'torch-process': alone, "
                                                                "in a fresh process of its own."),
    torch_compile: bool = typer.Option(_d("torch_compile"), "--torch-compile", help="With --baseline torch-process: "
                                       "time torch.compile too, in that process."),
    checkpoint: Optional[Path] = typer.Option(_d("checkpoint"), help="Checkpoint for --baseline and --peers (default: "
                                                                     "the bundle's source_checkpoint)."),
    peers: bool = typer.Option(_d("peers"), "--peers", help="Also compare every encoder with PyTorch eager, "
                               "torch.compile and the peer int8 recipe (Optimum / ORT quantize_static)."),
    peer_calib: int = typer.Option(_d("peer_calib"), help="With --peers: training rows calibrating the peer's static "
                                                          "int8."),
    peer_eval: int = typer.Option(_d("peer_eval"), help="With --peers: held-out rows of the fidelity cosines."),
    data: Optional[str] = typer.Option(_d("data"), help="Dataset name or JSONL file (default: the bundle's dataset)."),
    accuracy_samples: int = typer.Option(_d("accuracy_samples"), help="Test samples for the accuracy check (0: skip)."),
    members_compare: bool = typer.Option(_d("members_compare"), "--members-compare/--no-members-compare",
                                         help="Also time the member most accurate on the validation split, to "
                                              "compare with the ensemble."),
    footprint: bool = typer.Option(_d("footprint"), "--footprint/--no-footprint",
                                   help="Measure each precision in a fresh torch-free process (RSS, first "
                                        "prediction), started twice: the second start is reported, the first "
                                        "beside it."),
    background_load: bool = typer.Option(_d("background_load"), "--background-load", help="Also time the runtime "
                                         "beside a thread of numpy work (a busy app): p50/p90/p99 with and without."),
    seed: int = typer.Option(_d("seed"), help="Seed of the interleaving order and the accuracy subset."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the JSON report here."),
    plot: Optional[Path] = typer.Option(None, help="Write a latency-distribution PNG here."),
) -> None:
    """Benchmark a bundle: latency, per-stage times, memory, accuracy, roofline, vs PyTorch and peers."""
    from mmedge.bench import BenchOptions, run_bench, write_json

    try:
        opts = BenchOptions(
            bundle=bundle, precisions=split_list(precision, "--precision"), backends=split_list(backend, "--backend"),
            batches=int_list(batch, "--batch"), iters=iters, warmup=warmup, baseline=baseline,
            torch_compile=torch_compile, checkpoint=checkpoint, data=data, accuracy_samples=accuracy_samples,
            members_compare=members_compare, footprint=footprint, seed=seed, peers=peers, peer_calib=peer_calib,
            background_load=background_load,
            peer_eval=peer_eval, command=_command(), **({} if threads is None else {"threads": threads}))
        report = run_bench(opts, log=lambda msg: err_console.print(f"[dim]{msg}[/]"))
    except MmedgeError as e:
        fail(e)
    print_bench_report(report)
    if json_out is not None:
        console.print(f"JSON report written to [bold]{write_json(report, json_out)}[/]")
    if plot is not None:
        from mmedge.bench.plot import plot_latency

        console.print(f"latency plot written to [bold]{plot_latency(report, plot)}[/]")


def register(app: typer.Typer) -> None:
    """Adds ``bench`` to ``app``."""
    app.command("bench")(bench)
