"""Checkpoint folders: ``recipe.json`` (every setting), ``weights.pt`` (weights_only
loadable), ``metrics.json``, ``tokenizer.json``. Written atomically."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from mmedge import CHECKPOINT_FORMAT, __version__
from mmedge.atomic import make_temp_dir, recover_dir, replace_dir, sweep_stale
from mmedge.config import Recipe
from mmedge.encoders import Encoder, create_encoder, freeze
from mmedge.errors import CheckpointError
from mmedge.model import MultimodalEnsemble, build_head
from mmedge.plugins import check_plugins, plugin_records
from mmedge.runtime.ensemble import EnsembleMethod, Stacking

RECIPE_FILE, WEIGHTS_FILE, METRICS_FILE, TOKENIZER_FILE = "recipe.json", "weights.pt", "metrics.json", "tokenizer.json"


def save_checkpoint(out: Path, model: MultimodalEnsemble, *, labels: list[str], metrics: Mapping[str, Any],
                    tokenizer_file: Path | None, extra: Mapping[str, Any] | None = None) -> Path:
    """Writes the checkpoint folder ``out`` atomically (temporary folder, then rename)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(out)
    sweep_stale(out)  # what killed writers left
    tmp = make_temp_dir(out)
    try:
        meta = {
            "format": CHECKPOINT_FORMAT, "mmedge_version": __version__, "torch_version": torch.__version__,
            "recipe": model.recipe.to_dict(), "labels": list(labels), "plugins": plugin_records(model.recipe),
            "encoders": {m: {"name": model.recipe.encoders[m], "dim": e.dim, "source": e.pretrained_source,
                             "trained_here": e.trained_here, "input_names": list(e.input_names),
                             **({"tower": dict(e.record)} if hasattr(e, "record") else {})}
                         for m, e in model.encoders.items()},
            "members": [{"name": mb.name, "temperature": t, "weight": w, "inputs": list(model.heads[mb.name].input_names())}
                        for mb, t, w in zip(model.recipe.members, model.temperatures, model.weights)],
            "ensemble": {"method": model.method.value,
                         "stacking": model.stacking.to_dict() if model.stacking is not None else None},
            **(extra or {}),
        }
        (tmp / RECIPE_FILE).write_text(json.dumps(meta, indent=2))
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        torch.save(_trained_state(model), tmp / WEIGHTS_FILE)
        if tokenizer_file is not None:
            shutil.copyfile(tokenizer_file, tmp / TOKENIZER_FILE)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _trained_state(model: MultimodalEnsemble) -> dict[str, torch.Tensor]:
    """Heads and trained-here encoders; pretrained encoders come from their packages."""
    state = {f"heads.{k}": v for k, v in model.heads.state_dict().items()}
    for m, enc in model.encoders.items():
        if enc.trained_here:
            state.update({f"encoders.{m}.{k}": v for k, v in enc.state_dict().items()})
    return state


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """The parsed ``recipe.json`` of a checkpoint, with its format checked."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist; train one with `mmedge train --recipe digits-av -o {path}`")
    missing = [f for f in (RECIPE_FILE, WEIGHTS_FILE) if not (path / f).is_file()]
    if missing:
        raise CheckpointError(f"{path} is not an mmedge checkpoint: missing {missing}")
    try:
        meta = json.loads((path / RECIPE_FILE).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / RECIPE_FILE} is not valid JSON ({e}); re-train or restore the file") from None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {fmt!r}; this mmedge ({__version__}) reads {CHECKPOINT_FORMAT!r}. "
            "Re-train it with this version of mmedge."
        )
    return meta


def load_checkpoint(path: Path, *, drop_unused: bool = False) -> tuple[MultimodalEnsemble, dict[str, Any]]:
    """Loads a checkpoint folder into a ``MultimodalEnsemble`` (eval mode) and its metadata.

    Args:
        path: The checkpoint folder.
        drop_unused: The model as a bundle runs it: the members whose ensemble weight is 0 left out
            (they add nothing), and the recipe's ``ensemble`` set to the rule training fit.
    """
    meta = read_checkpoint_meta(path)
    check_plugins(meta, str(path))
    recipe = Recipe.from_dict(meta["recipe"])
    state = _load_weights(Path(path) / WEIGHTS_FILE)
    encoders = _load_encoders(recipe, state)
    dims = {m: e.dim for m, e in encoders.items()}
    ens = meta.get("ensemble") or {}  # absent: a checkpoint written before ensemble selection
    method = EnsembleMethod(ens.get("method") or recipe.ensemble)
    members = [(mb, m) for mb, m in zip(recipe.members, meta["members"])
               if not drop_unused or m["weight"] > 0 or method is EnsembleMethod.SOFT_VOTE]
    recipe = recipe.replace(members=tuple(mb for mb, _ in members), ensemble=method) if drop_unused else recipe
    heads = {mb.name: build_head(mb, recipe, dims, len(meta["labels"])) for mb, _ in members}
    model = MultimodalEnsemble(recipe, encoders, heads, [m["temperature"] for _, m in members],
                               [m["weight"] for _, m in members], method=method,
                               stacking=Stacking.from_dict(ens["stacking"]) if ens.get("stacking") else None)
    head_state = {k[len("heads."):]: v for k, v in state.items()
                  if k.startswith("heads.") and k.split(".")[1] in heads}
    try:
        model.heads.load_state_dict(head_state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: head weights do not match recipe.json ({e})") from None
    return model.eval(), meta


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    """``weights.pt`` as data only (``weights_only=True``): tensors in a dict, never code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError...
        raise CheckpointError(f"{path} cannot be loaded as plain tensors ({type(e).__name__}: {str(e)[:300]}); "
                              "it is damaged or holds objects other than tensors: re-train or restore it") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} must hold a dict of tensors; re-train or restore it")
    return state


def _load_encoders(recipe: Recipe, state: Mapping[str, torch.Tensor]) -> dict[str, Encoder]:
    """Pretrained encoders from their packages; trained or fine-tuned ones from ``weights.pt``."""
    encoders = {}
    for m, name in recipe.encoders.items():
        enc = create_encoder(name, modality=m)
        prefix = f"encoders.{m}."
        own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if own:
            enc.load_state_dict(own)
            enc.trained_here = True
        elif enc.trained_here:
            raise CheckpointError(f"weights.pt has no weights for the {m} encoder ({name}), which is trained by mmedge")
        encoders[m] = freeze(enc)
    return encoders
