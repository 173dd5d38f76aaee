"""``mmedge train``: from a recipe (and its dataset) to a checkpoint folder with metrics."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmedge.config import MemberConfig, Recipe
from mmedge.encoder_tuning import TailTraining, train_tail
from mmedge.encoders import Encoder, create_encoder, encoder_tokenizer, freeze
from mmedge.ensemble_fit import fit_temperature, fit_weights
from mmedge.errors import ConfigError, DataError
from mmedge.features import FeatureSet, batched_inputs, encode
from mmedge.head_training import accuracy, predict_logits, train_member
from mmedge.model import MultimodalEnsemble
from mmedge.progress import log
from mmedge.runtime.ensemble import EnsembleMethod, combine, softmax


@dataclass
class TrainingResult:
    """What ``train_recipe`` produced."""

    model: MultimodalEnsemble
    metrics: dict[str, Any]
    checkpoint: Path | None


def load_recipe_data(recipe: Recipe, *, seed: int = 0):
    """The recipe's dataset: a registered reference dataset or a JSONL file."""
    from mmedge.datasets import build_dataset, load_jsonl

    if recipe.dataset.endswith(".jsonl"):
        return load_jsonl(recipe.dataset, seed=seed, task=recipe.task)
    return build_dataset(recipe.dataset, seed=seed)


def limit_data(data, subset: int | None):
    """Keeps at most ``subset`` training rows (and ``subset // 2`` val/test rows), class-interleaved."""
    if subset is None:
        return data
    keep = [_interleave(data.splits[s], data.y, n) for s, n in (("train", subset), ("val", subset // 2), ("test", subset // 2))]
    return data.subset(np.concatenate(keep))


def _interleave(rows: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    order = np.lexsort((y[rows], _rank_within_class(y[rows])))  # round-robin over classes
    return rows[order[:n]]


def _rank_within_class(y: np.ndarray) -> np.ndarray:
    rank = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = np.nonzero(y == c)[0]
        rank[idx] = np.arange(len(idx))
    return rank


def check_data(recipe: Recipe, data) -> None:
    """The dataset must hold every modality the recipe uses and enough rows per split."""
    missing = [m for m in recipe.modalities if m not in data.modalities]
    if missing:
        raise DataError(f"recipe {recipe.name!r} needs modalities {missing} but dataset {data.name!r} has only "
                        f"{list(data.modalities)}; drop them from the recipe or add them to the data")
    for split in ("train", "val", "test"):
        if len(data.splits.get(split, ())) < 2:
            raise DataError(f"dataset {data.name!r} has fewer than 2 rows in its {split!r} split")


def build_trained_encoders(recipe: Recipe, data) -> dict[str, Encoder]:
    """The recipe's encoders, frozen. Trained-here ones (the audio CNN) are trained first, and
    pretrained ones with ``recipe.unfreeze[m] > 0`` get their last blocks fine-tuned."""
    encoders = {}
    for m, name in recipe.encoders.items():
        enc = create_encoder(name)
        blocks = recipe.unfreeze.get(m, 0)
        if enc.trained_here or blocks:
            acc = _fit_encoder(enc, m, blocks, recipe, data)
            enc.trained_here = True
            log(f"  {m} encoder trained ({'all' if not blocks else f'last {blocks} blocks'}): val accuracy {acc:.4f}")
        encoders[m] = freeze(enc)
    return encoders


def _fit_encoder(enc: Encoder, modality: str, blocks: int, recipe: Recipe, data) -> float:
    if blocks:
        trunk, tail, forward = enc.split_for_finetune(blocks)
        spec = TailTraining(forward, tail, enc.dim)
    else:
        trunk, spec = None, TailTraining(enc, enc, enc.dim, enc.train_augment)
    x, y = {}, {}
    for split in ("train", "val"):
        part = data.subset(data.splits[split])
        with torch.no_grad():
            x[split] = torch.cat([_trunk_out(trunk, enc, b) for b in batched_inputs(part, modality, recipe, _tokenizer_file(recipe))])
        y[split] = torch.as_tensor(part.y, dtype=torch.long)
    return train_tail(spec, x, y, len(data.labels), recipe.train, desc=f"training {modality} encoder")


def _trunk_out(trunk, enc: Encoder, batch: dict) -> torch.Tensor:
    inputs = [torch.from_numpy(batch[n]) for n in enc.input_names]
    return trunk(*inputs) if trunk is not None else inputs[0]


def _tokenizer_file(recipe: Recipe) -> Path | None:
    if "text" not in recipe.modalities:
        return None
    path = encoder_tokenizer(recipe.encoders["text"])
    if path is None or not path.is_file():
        raise ConfigError(f"text encoder {recipe.encoders['text']!r} has no tokenizer.json ({path}); give its "
                          "factory a tokenizer_file() returning one, or save it beside a Hugging Face model")
    return path


def train_recipe(recipe: Recipe, out: Path | None = None, *, data=None) -> TrainingResult:
    """Trains every member of ``recipe``, calibrates and fits the ensemble, writes the checkpoint.

    Args:
        recipe: What to train.
        out: Checkpoint folder to write (None: don't write).
        data: A ``MultimodalDataset`` to use instead of the recipe's own.
    """
    data = limit_data(data if data is not None else load_recipe_data(recipe, seed=recipe.train.seed), recipe.subset)
    check_data(recipe, data)
    log(f"[bold]{recipe.name}[/]: {len(data)} samples, modalities {list(recipe.modalities)}")
    tokenizer_file = _tokenizer_file(recipe)
    encoders = build_trained_encoders(recipe, data)
    feats = encode(encoders, data, recipe, tokenizer_file)
    split = {s: feats.take(data.splits[s]) for s in ("train", "val", "test")}
    dims = {m: e.dim for m, e in encoders.items()}
    heads, val_logits, test_logits, metrics = {}, [], [], {"members": {}, "baselines": {}}
    for mb in recipe.members:
        res = train_member(mb, recipe, dims, len(data.labels), split["train"], split["val"])
        heads[mb.name] = res.head
        val_logits.append(predict_logits(res.head, split["val"]))
        test_logits.append(predict_logits(res.head, split["test"]))
        metrics["members"][mb.name] = {"head": mb.head, "val_accuracy": res.val_accuracy, "epochs": res.epochs_run,
                                      "test_accuracy": accuracy(test_logits[-1], split["test"].y)}
        log(f"  member {mb.name}: test accuracy {metrics['members'][mb.name]['test_accuracy']:.4f}")
    temps, weights = fit_ensemble(recipe, val_logits, split["val"].y.numpy())
    model = MultimodalEnsemble(recipe, encoders, heads, temps, weights).eval()
    metrics["ensemble"] = ensemble_metrics(recipe, test_logits, split["test"].y.numpy(), temps, weights)
    if recipe.baselines and recipe.task == "classification":
        metrics["baselines"] = train_baselines(recipe, dims, len(data.labels), split)
    metrics["samples"] = {s: len(v) for s, v in split.items()}
    ckpt = None
    if out is not None:
        from mmedge.checkpoint import save_checkpoint

        ckpt = save_checkpoint(out, model, labels=list(data.labels), metrics=metrics, tokenizer_file=tokenizer_file,
                               extra={"dataset": {"name": data.name, "task": data.task, "seed": recipe.train.seed}})
    return TrainingResult(model, metrics, ckpt)


def fit_ensemble(recipe: Recipe, val_logits: list[np.ndarray], y_val: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-member temperatures and ensemble weights, both fit on the validation split."""
    temps = [fit_temperature(lg, y_val) for lg in val_logits]
    if recipe.ensemble is EnsembleMethod.SOFT_VOTE:
        return temps, [1.0] * len(val_logits)
    probs = np.stack([softmax(lg, t) for lg, t in zip(val_logits, temps)])
    return temps, [float(w) for w in fit_weights(probs, y_val)]


def ensemble_metrics(recipe: Recipe, test_logits, y_test, temps, weights) -> dict[str, Any]:
    """Test accuracy of the recipe's rule, and of every other rule for comparison."""
    out = {"method": recipe.ensemble.value, "temperatures": temps, "weights": weights}
    for method in EnsembleMethod:
        w = [1.0] * len(weights) if method is EnsembleMethod.SOFT_VOTE else weights
        out[f"test_accuracy_{method.value}"] = accuracy(combine(test_logits, method=method, weights=w, temperatures=temps), y_test)
    out["test_accuracy"] = out[f"test_accuracy_{recipe.ensemble.value}"]
    return out


def train_baselines(recipe: Recipe, dims, num_classes: int, split: dict[str, FeatureSet]) -> dict[str, Any]:
    """Single-modality baselines: a concat (MLP) head on each modality alone."""
    out = {}
    for m in recipe.modalities:
        mb = MemberConfig(name=f"{m}_only", head="concat", modalities=(m,), seed=100)
        res = train_member(mb, recipe, dims, num_classes, split["train"], split["val"])
        out[m] = {"val_accuracy": res.val_accuracy, "test_accuracy": accuracy(predict_logits(res.head, split["test"]), split["test"].y)}
        log(f"  baseline {m} only: test accuracy {out[m]['test_accuracy']:.4f}")
    return out
