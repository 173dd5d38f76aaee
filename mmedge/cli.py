"""The ``mmedge`` command line (Typer + rich)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from mmedge.errors import MmedgeError

app = typer.Typer(help="mmedge: multimodal fusion models from PyTorch to the edge.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
# Pipes and CI logs get 140 columns instead of rich's 80, so the wide tables stay readable.
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True)


def _fail(e: Exception) -> None:
    err_console.print(f"[bold red]error:[/] {e}")
    raise typer.Exit(2)


@app.command()
def recipes() -> None:
    """List the built-in recipes, fusion heads and encoders."""
    from mmedge.config import get_recipe, list_recipes
    from mmedge.encoders import list_encoders
    from mmedge.fusion import list_fusion_heads

    for name in list_recipes():
        r = get_recipe(name)
        console.print(f"[bold]{name}[/]: {r.task}, modalities {list(r.modalities)}, members {[m.name for m in r.members]}")
    console.print(f"fusion heads: {', '.join(list_fusion_heads())}")
    console.print(f"encoders: {', '.join(list_encoders())}")


@app.command()
def train(
    recipe: str = typer.Option("digits-av", help="Built-in recipe (see `mmedge recipes`)."),
    data: Optional[Path] = typer.Option(None, help="Your own JSONL dataset (docs/data_format.md) instead of the recipe's."),
    task: str = typer.Option("classification", help="With --data: classification or matching."),
    out: Path = typer.Option(Path("runs/digits-av"), "--out", "-o", help="Checkpoint folder to write."),
    subset: Optional[int] = typer.Option(None, help="Use at most this many training samples (quick runs)."),
    epochs: Optional[int] = typer.Option(None, help="Override the recipe's epochs per member."),
    ensemble: Optional[str] = typer.Option(None, help="weighted_mean | soft_vote | majority_vote."),
) -> None:
    """Train every ensemble member, calibrate, fit the ensemble, write a checkpoint."""
    from mmedge import progress

    progress.enable()
    try:
        result = _train(recipe, data, task, out, subset, epochs, ensemble)
    except MmedgeError as e:
        _fail(e)
    console.print(metrics_table(result.metrics))
    console.print(f"checkpoint written to [bold]{result.checkpoint}[/]")


def _train(recipe_name, data, task, out, subset, epochs, ensemble):
    import dataclasses

    from mmedge.config import get_recipe, recipe_for_data
    from mmedge.pipeline import train_recipe

    dataset = None
    if data is not None:
        from mmedge.datasets import load_jsonl

        dataset = load_jsonl(data, task=task)
        r = recipe_for_data(str(data.resolve()), dataset.modalities, task=task)
    else:
        r = get_recipe(recipe_name)
    changes = {"subset": subset} if subset is not None else {}
    if epochs is not None:
        changes["train"] = dataclasses.replace(r.train, epochs=epochs)
    if ensemble is not None:
        changes["ensemble"] = ensemble
    return train_recipe(r.replace(**changes), out, data=dataset)


def metrics_table(metrics: dict) -> Table:
    """A rich table of test accuracy: baselines, members, ensemble."""
    table = Table(title="test accuracy")
    table.add_column("model")
    table.add_column("kind")
    table.add_column("test accuracy", justify="right")
    for m, v in metrics.get("baselines", {}).items():
        table.add_row(f"{m} only", "single-modality baseline", f"{v['test_accuracy']:.2%}")
    for name, v in metrics["members"].items():
        table.add_row(name, f"member ({v['head']})", f"{v['test_accuracy']:.2%}")
    ens = metrics["ensemble"]
    for key, v in ens.items():
        if key.startswith("test_accuracy_"):
            method = key[len("test_accuracy_"):]
            star = " (used)" if method == ens["method"] else ""
            table.add_row("ensemble", f"{method}{star}", f"{v:.2%}")
    return table


from mmedge import cli_bench, cli_bundle, cli_demo  # noqa: E402,F401  (registers export, inspect, run, bench, demo)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
