"""``mmedge recipes`` and ``mmedge train`` (workstation side: needs ``mmedge[export]``)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mmedge.cli.console import console, fail
from mmedge.cli.tables import metrics_table
from mmedge.errors import ConfigError, MmedgeError


def recipes() -> None:
    """List the built-in recipes, fusion heads and encoders."""
    from mmedge.config import get_recipe, list_recipes
    from mmedge.encoders import list_encoders
    from mmedge.fusion import list_fusion_heads

    for name in list_recipes():
        r = get_recipe(name)
        console.print(f"[bold]{name}[/]: {r.task}, modalities {list(r.modalities)}, members {[m.name for m in r.members]}")
    console.print(f"fusion heads: {', '.join(list_fusion_heads())}")
    console.print(f"encoders: {', '.join(list_encoders())}, or hf:PATH (a local Hugging Face folder)")


def train(
    recipe: str = typer.Option("digits-av", help="Built-in recipe (see `mmedge recipes`)."),
    data: Optional[Path] = typer.Option(None, help="Your own JSONL dataset (docs/data_format.md) instead of the recipe's."),
    task: str = typer.Option("classification", help="With --data: classification or matching."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Checkpoint folder to write (default: runs/<recipe>, "
                                                                 "or runs/<data file name, no suffix> with --data)."),
    subset: Optional[int] = typer.Option(None, help="Use at most this many training samples (quick runs)."),
    epochs: Optional[int] = typer.Option(None, help="Override the recipe's epochs per member."),
    ensemble: Optional[str] = typer.Option(None, help="weighted_mean | soft_vote | majority_vote."),
    encoder: Optional[List[str]] = typer.Option(  # noqa: B008
        None, metavar="MODALITY=NAME", help="Use this encoder for a modality: a registered name (`mmedge recipes`, "
        "plug-ins) or a local Hugging Face folder, e.g. text=hf:./my-bert (repeatable)."),
    head: Optional[List[str]] = typer.Option(  # noqa: B008
        None, metavar="NAME", help="Train these registered fusion heads (one member each, over every modality) "
        "instead of the recipe's members (repeatable)."),
) -> None:
    """Train every ensemble member, calibrate, fit the ensemble, write a checkpoint."""
    from mmedge import progress

    progress.enable()
    out = out if out is not None else Path("runs") / (data.stem if data is not None else recipe)
    try:
        overrides = {"encoders": _pairs(encoder or [], "--encoder"), "heads": tuple(head or ())}
        result = _train(recipe, data, task, out, subset, epochs, ensemble, overrides)
    except MmedgeError as e:
        fail(e)
    console.print(metrics_table(result.metrics))
    console.print(f"checkpoint written to [bold]{result.checkpoint}[/]")


def _pairs(values: List[str], flag: str) -> dict[str, str]:
    pairs = [v.split("=", 1) for v in values]
    bad = [v for v, p in zip(values, pairs) if len(p) != 2 or not p[0].strip() or not p[1].strip()]
    if bad:
        raise ConfigError(f"{flag} takes MODALITY=NAME, e.g. {flag} text=hf:./my-bert; got {bad}")
    return {k.strip(): v.strip() for k, v in pairs}


def _with_overrides(r, overrides: dict):
    from mmedge.config import MemberConfig

    if overrides["encoders"]:
        r = r.with_encoders(overrides["encoders"])
    if overrides["heads"]:
        r = r.replace(members=tuple(MemberConfig(h, h, r.modalities, seed=i) for i, h in enumerate(overrides["heads"])))
    return r


def _train(recipe_name, data, task, out, subset, epochs, ensemble, overrides):
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
    r = _with_overrides(r, overrides)
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
