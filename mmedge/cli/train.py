"""``mmedge recipes`` and ``mmedge train`` (workstation side: needs ``mmedge[export]``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmedge.cli.console import console, fail
from mmedge.cli.tables import metrics_table
from mmedge.errors import MmedgeError


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
        fail(e)
    console.print(metrics_table(result.metrics))
    console.print(f"checkpoint written to [bold]{result.checkpoint}[/]")


def _train(recipe_name, data, task, out, subset, epochs, ensemble):
    import dataclasses

    from mmedge.config import get_recipe, recipe_for_data
    from mmedge.training import train_recipe

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


def register(app: typer.Typer) -> None:
    """Adds ``recipes`` and ``train`` to ``app``."""
    app.command()(recipes)
    app.command()(train)
