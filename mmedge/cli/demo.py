"""``mmedge demo``: the main job on the built-in default, end to end."""
from __future__ import annotations

from pathlib import Path

import typer

from mmedge.cli.console import console, fail
from mmedge.cli.tables import accuracy_table, components_table, metrics_table, print_bench_report
from mmedge.errors import MmedgeError


def demo(
    workdir: Path = typer.Option(Path("."), help="Where runs/, bundles/ and benchmarks/ go."),
    recipe: str = typer.Option("digits-av", help="Built-in recipe."),
    iters: int = typer.Option(100, help="Timed iterations per benchmark configuration."),
    threads: int = typer.Option(2, help="CPU threads for ONNX Runtime and PyTorch."),
) -> None:
    """Train the reference ensemble, export it (fp32/fp16/int8/int8-trt), run it, benchmark it vs PyTorch."""
    from mmedge import progress

    progress.enable()
    ckpt, bundle = workdir / "runs" / recipe, workdir / "bundles" / recipe
    try:
        _train(recipe, ckpt)
        _export(ckpt, bundle)
        _run(bundle)
        _bench(bundle, ckpt, workdir / "benchmarks", iters, threads)
    except MmedgeError as e:
        fail(e)


def _train(recipe: str, ckpt: Path) -> None:
    from mmedge.config import get_recipe
    from mmedge.training import train_recipe

    console.rule(f"1/4 train {recipe}")
    result = train_recipe(get_recipe(recipe), ckpt)
    console.print(metrics_table(result.metrics))
    if result.metrics["ensemble"].get("selection"):
        console.print(_selection_table(result.metrics["ensemble"]))


def _selection_table(ensemble: dict):
    """Ensemble selection on the validation split: every candidate rule, the one kept, its weights."""
    from rich.table import Table

    sel, on_test = ensemble["selection"], ensemble.get("rules_test_accuracy", {})
    weights = ", ".join(f"{n} {w:.2f}" for n, w in sel["weights"].items() if w > 0)
    folds = "grouped folds (voice, source image)" if str(sel.get("folds")).startswith("groups") else "folds by rows"
    table = Table(title=f"ensemble selection (validation, cross-validated, {folds}): kept {sel['rule']}; weights {weights}; "
                        f"dropped {sel['dropped'] or 'none'}; oracle {sel['oracle_accuracy']:.2%}")
    for col in ("rule", "cv accuracy", "validation accuracy", "test accuracy"):
        table.add_column(col, justify="left" if col == "rule" else "right")
    for rule, s in sel["candidates"].items():
        table.add_row(rule + (" (kept)" if rule == sel["rule"] else ""), f"{s['cv_accuracy']:.2%}",
                      f"{s['val_accuracy']:.2%}", f"{on_test[rule]:.2%}" if rule in on_test else "")
    return table


def _export(ckpt: Path, bundle: Path) -> None:
    from mmedge.export.exporter import export_checkpoint

    console.rule("2/4 export")
    manifest = export_checkpoint(ckpt, bundle)
    console.print(components_table(manifest))
    console.print(accuracy_table(manifest))


def _run(bundle: Path, n: int = 6) -> None:
    import numpy as np

    from mmedge.datasets import build_dataset
    from mmedge.evaluation import raw_inputs
    from mmedge.runtime import Session

    console.rule("3/4 run (mmedge.runtime, no torch in the loop)")
    with Session(bundle, precision=_precisions(bundle)[-1], backend="auto") as session:
        dataset = session.bundle.manifest.dataset or {}
        data = build_dataset(dataset["name"], seed=dataset.get("seed", 0))
        rows = np.asarray(data.splits["test"])[:n]
        pred = session.predict(**raw_inputs(data, rows, session.bundle.modalities))
        for i, row in enumerate(rows):
            text = f" / {data.texts[row]!r}" if data.texts is not None else ""
            console.print(f"  truth {data.labels[data.y[row]]:>8}{text} -> {pred.labels[i]} "
                          f"(p={pred.probabilities[i].max():.3f})")
        console.print(f"  backend {session.backend} ({session.backend_reason}); batch of {n}: "
                      f"{pred.timings_ms['total']:.1f} ms")


def _bench(bundle: Path, ckpt: Path, out: Path, iters: int, threads: int) -> None:
    from mmedge.bench import BenchOptions, run_bench, write_json
    from mmedge.bench.plot import plot_latency

    console.rule("4/4 bench vs PyTorch eager (alone in its own process; one BLAS thread and the runtime's text "
                 "padding on both sides)")
    backends = ("auto", "ort")  # what `auto` runs here (mixed: each graph on the backend export chose), and ORT
    opts = BenchOptions(bundle=bundle, precisions=_precisions(bundle), backends=backends, batches=(1,), iters=iters,
                        warmup=10, threads=threads, baseline="torch-process", checkpoint=ckpt,
                        command=("mmedge", "demo"))
    report = run_bench(opts, log=lambda msg: console.print(f"[dim]{msg}[/]"))
    print_bench_report(report)
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"JSON: {write_json(report, out / 'demo.json')}, plot: {plot_latency(report, out / 'demo.png')}")


def _precisions(bundle: Path) -> tuple[str, ...]:
    """fp32, then int8 and mixed when the export shipped them (a failed precision is never run)."""
    from mmedge.runtime import Bundle

    with Bundle.open(bundle, verify=False) as b:
        ok = b.precisions()
    return tuple(p for p in ("fp32", "int8", "mixed") if p in ok)


def register(app: typer.Typer) -> None:
    """Adds ``demo`` to ``app``."""
    app.command()(demo)
