"""``mmedge train``: from a recipe (and its dataset) to a checkpoint folder with metrics."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmedge.config import MemberConfig, Recipe
from mmedge.encoder_tuning import TailTraining, train_tail
from mmedge.encoders import Encoder, create_encoder, encoder_tokenizer, freeze
from mmedge.ensemble_fit import fit_temperature, fit_weights
from mmedge.ensemble_selection import Selection, SelectionRule, apply_rule, fit_rule, select_ensemble
from mmedge.errors import ConfigError, DataError
from mmedge.features import FeatureSet, batched_inputs, encode
from mmedge.fusion import FusionHead
from mmedge.head_training import accuracy, predict_logits, train_member
from mmedge.model import MultimodalEnsemble
from mmedge.progress import log
from mmedge.runtime.ensemble import EnsembleMethod, Stacking, combine, softmax


@dataclass(frozen=True)
class EnsembleFit:
    """The combination fit on the validation split.

    Attributes:
        method: The runtime rule (``weighted_mean`` for the best member and greedy weights, ``stacking``...).
        temperatures: One per member, in recipe order.
        weights: One per member (0: the member adds nothing and is left out of bundles).
        stacking: The stacking model when ``method`` is ``stacking``.
        selection: The selection's evidence (None for soft_vote and majority_vote, which select nothing).
    """

    method: EnsembleMethod
    temperatures: list[float]
    weights: list[float]
    stacking: Stacking | None = None
    selection: Selection | None = field(default=None, repr=False)


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
        enc = create_encoder(name, modality=m)
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
    data, tokenizer_file, encoders, split = encoded_splits(recipe, data)
    dims = {m: e.dim for m, e in encoders.items()}
    heads, fit, metrics = train_ensemble(recipe, split, dims, len(data.labels))
    model = MultimodalEnsemble(recipe, encoders, heads, fit.temperatures, fit.weights, method=fit.method,
                               stacking=fit.stacking).eval()
    if recipe.baselines and recipe.task == "classification":
        metrics["baselines"] = train_baselines(recipe, dims, len(data.labels), split)
    ckpt = None
    if out is not None:
        from mmedge.checkpoint import save_checkpoint

        ckpt = save_checkpoint(out, model, labels=list(data.labels), metrics=metrics, tokenizer_file=tokenizer_file,
                               extra={"dataset": {"name": data.name, "task": data.task, "seed": recipe.train.seed},
                                      "ensemble_selection": metrics["ensemble"].get("selection")})
    return TrainingResult(model, metrics, ckpt)


def encoded_splits(recipe: Recipe, data=None) -> tuple[Any, Path | None, dict[str, Encoder], dict[str, FeatureSet]]:
    """The recipe's data (limited to ``recipe.subset``), tokenizer file, trained encoders, and their
    features of the ``train``/``val``/``test`` splits (each encoder run once over the data)."""
    data = limit_data(data if data is not None else load_recipe_data(recipe, seed=recipe.train.seed), recipe.subset)
    check_data(recipe, data)
    log(f"[bold]{recipe.name}[/]: {len(data)} samples, modalities {list(recipe.modalities)}")
    tokenizer_file = _tokenizer_file(recipe)
    encoders = build_trained_encoders(recipe, data)
    feats = encode(encoders, data, recipe, tokenizer_file)
    return data, tokenizer_file, encoders, {s: feats.take(data.splits[s]) for s in ("train", "val", "test")}


def train_ensemble(recipe: Recipe, split: dict[str, FeatureSet], dims: dict[str, int], num_classes: int
                   ) -> tuple[dict[str, FusionHead], EnsembleFit, dict[str, Any]]:
    """Trains every member head on cached features, fits the combination on validation, scores the test split.

    Args:
        recipe: What to train (its members and their seeds).
        split: ``train``/``val``/``test`` encoder features.
        dims: Encoder output size per modality.
        num_classes: Number of labels.

    Returns:
        The heads by member name, the ensemble fit, and the metrics (members, ensemble, samples).
    """
    heads, val_logits, test_logits, metrics = {}, [], [], {"members": {}, "baselines": {}}
    for mb in recipe.members:
        res = train_member(mb, recipe, dims, num_classes, split["train"], split["val"])
        heads[mb.name] = res.head
        val_logits.append(predict_logits(res.head, split["val"]))
        test_logits.append(predict_logits(res.head, split["test"]))
        metrics["members"][mb.name] = {"head": mb.head, "val_accuracy": res.val_accuracy, "epochs": res.epochs_run,
                                      "test_accuracy": accuracy(test_logits[-1], split["test"].y)}
        log(f"  member {mb.name}: test accuracy {metrics['members'][mb.name]['test_accuracy']:.4f}")
    fit = fit_ensemble(recipe, val_logits, split["val"].y.numpy(), groups=split["val"].groups)
    metrics["ensemble"] = ensemble_metrics(recipe, test_logits, split["test"].y.numpy(), fit,
                                           val=(val_logits, split["val"].y.numpy()))
    metrics["samples"] = {s: len(v) for s, v in split.items()}
    return heads, fit, metrics


def fit_ensemble(recipe: Recipe, val_logits: list[np.ndarray], y_val: np.ndarray, *,
                 groups: np.ndarray | None = None) -> EnsembleFit:
    """Per-member temperatures and the combination, both fit on the validation split.

    ``weighted_mean`` and ``stacking`` recipes run ensemble selection (``recipe.ensemble_rule`` forces a
    rule; ``groups``, the validation rows' sources, keep near-copies in one cross-validation fold);
    ``soft_vote`` weighs members equally; ``majority_vote`` weighs votes by NLL-fit weights.
    """
    temps = [fit_temperature(lg, y_val) for lg in val_logits]
    if recipe.ensemble is EnsembleMethod.SOFT_VOTE:
        return EnsembleFit(recipe.ensemble, temps, [1.0] * len(val_logits))
    probs = np.stack([softmax(lg, t) for lg, t in zip(val_logits, temps)])
    if recipe.ensemble is EnsembleMethod.MAJORITY_VOTE:
        return EnsembleFit(recipe.ensemble, temps, [float(w) for w in fit_weights(probs, y_val)])
    forced = recipe.ensemble_rule or (SelectionRule.STACKING if recipe.ensemble is EnsembleMethod.STACKING else None)
    if forced is None and not _selectable(len(recipe.members), y_val):
        log("  ensemble: weighted_mean fit on validation (rule selection needs 2+ members and 2+ validation "
            "samples of every class)")
        return EnsembleFit(EnsembleMethod.WEIGHTED_MEAN, temps, [float(w) for w in fit_weights(probs, y_val)])
    sel = select_ensemble(probs, y_val, [mb.name for mb in recipe.members], rule=forced, seed=recipe.train.seed,
                         groups=groups)
    stacked = sel.rule is SelectionRule.STACKING
    log(f"  ensemble: {sel.rule.value} (cross-validated on validation, folds by {sel.folds}), weights "
        f"{dict(zip(sel.names, (round(w, 3) for w in sel.weights)))}, dropped {list(sel.dropped)}")
    return EnsembleFit(EnsembleMethod.STACKING if stacked else EnsembleMethod.WEIGHTED_MEAN, temps,
                       list(sel.weights), sel.stacking, sel)


def _selectable(members: int, y_val) -> bool:
    """Whether rule selection can cross-validate: several members, 2+ validation samples of each class."""
    counts = np.bincount(np.asarray(y_val, dtype=np.int64))
    return members > 1 and counts.size > 0 and int(counts[counts > 0].min()) >= 2


def ensemble_metrics(recipe: Recipe, test_logits, y_test, fit: EnsembleFit, *, val=None) -> dict[str, Any]:
    """Test accuracy of the fitted rule, and of every other rule for comparison.

    Args:
        recipe: The recipe trained.
        test_logits: Each member's test logits.
        y_test: Test labels.
        fit: The fitted combination.
        val: (validation logits, labels): also refit and score every selection rule on the test split.
    """
    temps, weights = fit.temperatures, fit.weights
    out = {"method": fit.method.value, "temperatures": temps, "weights": weights,
           "test_accuracy": accuracy(_combined(test_logits, fit.method, weights, temps, fit.stacking), y_test)}
    for method in (m for m in EnsembleMethod if m is not EnsembleMethod.STACKING):
        w = [1.0] * len(weights) if method is EnsembleMethod.SOFT_VOTE or sum(weights) <= 0 else weights
        out[f"test_accuracy_{method.value}"] = accuracy(combine(test_logits, method=method, weights=w, temperatures=temps), y_test)
    out[f"test_accuracy_{fit.method.value}"] = out["test_accuracy"]
    if fit.selection is not None:
        out["selection"] = fit.selection.to_dict()
        if val is not None:
            out["rules_test_accuracy"] = _rule_test_accuracy(val, test_logits, y_test, temps)
    return out


def _combined(logits, method: EnsembleMethod, weights, temps, stacking: Stacking | None) -> np.ndarray:
    w = [1.0] * len(weights) if method is EnsembleMethod.SOFT_VOTE else weights
    return combine(logits, method=method, weights=w, temperatures=temps, stacking=stacking)


def _rule_test_accuracy(val, test_logits, y_test, temps) -> dict[str, float]:
    """Each selection rule refit on the whole validation split, scored on the test split."""
    val_logits, y_val = val
    val_probs = np.stack([softmax(lg, t) for lg, t in zip(val_logits, temps)])
    test_probs = np.stack([softmax(lg, t) for lg, t in zip(test_logits, temps)])
    out = {}
    for rule in SelectionRule:
        out[rule.value] = accuracy(apply_rule(*fit_rule(rule, val_probs, y_val), test_probs), y_test)
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
