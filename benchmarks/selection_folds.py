"""Which cross-validation folds make ensemble selection's scores honest? One training run, several fold groupings.

Trains every member head of a reference recipe once (seed ``--seed``, as ``benchmarks/ensemble_seeds.py``
does, on its cached encoder features), calibrates them on the validation split, then scores every
selection rule (``mmedge.ensemble_selection.select_ensemble``) with folds over rows, over each of the
dataset's grouping keys alone (``mmedge.datasets.base.GROUP_META``), and over all of them (the default:
the first key's groups held out, no fit row sharing any key with them), beside each rule's accuracy on
the test split. A grouping is honest where the rules' cross-validated order matches their test order.

    python benchmarks/selection_folds.py --recipe digits-av --seed 0

Measured (2026-12-03, digits-av): stacking cross-validated 97.29% by rows and 97.71% by source image, yet
scored 95.75% on test; by voice ("clip") 93.06%, below the best member's 94.17% as on test (seed 0);
seed 1: by voice 93.89% against 96.18%, voice + source 94.31% against 95.21%.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np


def member_probabilities(recipe, cached, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(K, N, C) calibrated validation and test probabilities of every member head, trained once, and the names."""
    from mmedge.ensemble_fit import fit_temperature
    from mmedge.features import FeatureSet
    from mmedge.head_training import predict_logits, train_member
    from mmedge.runtime.ensemble import softmax

    split = {s: FeatureSet(dict(v["feats"]), v["y"]) for s, v in cached["split"].items()}
    y_val = split["val"].y.numpy()
    val, test = [], []
    members = [dataclasses.replace(mb, seed=mb.seed + 100 * seed) for mb in recipe.members]
    for mb in members:
        head = train_member(mb, recipe, cached["dims"], cached["labels"], split["train"], split["val"]).head
        logits = predict_logits(head, split["val"])
        t = fit_temperature(logits, y_val)
        val.append(softmax(logits, t))
        test.append(softmax(predict_logits(head, split["test"]), t))
    return np.stack(val), np.stack(test), [mb.name for mb in members]


def groupings(recipe, groups: np.ndarray | None) -> dict[str, np.ndarray | None]:
    """Rows, each grouping key alone, and all keys together (the default), from (N, G) validation groups
    (``row_groups``: the ``GROUP_META`` keys the recipe's dataset has, in that order)."""
    from mmedge.datasets.base import GROUP_META
    from mmedge.training import limit_data, load_recipe_data

    out: dict[str, np.ndarray | None] = {"rows": None}
    if groups is None:
        return out
    meta = limit_data(load_recipe_data(recipe, seed=recipe.train.seed), recipe.subset).meta
    keys = [k for k in GROUP_META if k in meta]
    out.update({k: groups[:, j] for j, k in enumerate(keys)})
    if len(keys) > 1:
        out["+".join(keys)] = groups
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="digits-av")
    parser.add_argument("--seed", type=int, default=0, help="member seeds shifted by 100 * seed (ensemble_seeds' runs)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mmedge" / "features")
    args = parser.parse_args()

    from ensemble_seeds import cached_features  # benchmarks/ensemble_seeds.py, beside this file

    from mmedge.config import get_recipe
    from mmedge.ensemble_selection import SelectionRule, apply_rule, fit_rule, select_ensemble

    recipe = get_recipe(args.recipe).replace(baselines=False)
    cached = cached_features(recipe, args.cache)
    val, test, names = member_probabilities(recipe, cached, args.seed)
    y_val, y_test = cached["split"]["val"]["y"].numpy(), cached["split"]["test"]["y"].numpy()
    groups = cached["split"]["val"]["groups"]
    on_test = {r.value: float(np.mean(apply_rule(*fit_rule(r, val, y_val), test).argmax(1) == y_test))
               for r in SelectionRule}
    print(f"{args.recipe} seed {args.seed}, test: " + ", ".join(f"{r} {100 * a:.2f}%" for r, a in on_test.items()))
    for name, g in groupings(recipe, None if groups is None else groups.numpy()).items():
        sel = select_ensemble(val, y_val, names, groups=g)
        cv = ", ".join(f"{s.rule.value} {100 * s.cv_accuracy:.2f}%" for s in sel.scores)
        print(f"  folds by {name} ({sel.folds}): cross-validated {cv}; kept {sel.rule.value}")


if __name__ == "__main__":
    main()
