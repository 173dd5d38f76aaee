"""Ensemble selection: greedy forward selection, stacking and the cross-validated choice."""
from __future__ import annotations

import numpy as np
import pytest

from mmedge.ensemble_selection import (AUTO_RULES, SelectionRule, diversity, fit_stacking, greedy_weights, select_ensemble)
from mmedge.errors import ConfigError


def _members(seed: int = 0, n: int = 300, c: int = 4, noise=(0.9, 1.1, 2.5)) -> tuple[np.ndarray, np.ndarray]:
    """K noisy members' probabilities over the same labels: independent errors, different quality."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    onehot = np.eye(c)[y] * 2.0
    probs = []
    for scale in noise:
        z = onehot + rng.normal(0.0, scale, (n, c))
        e = np.exp(z - z.max(axis=1, keepdims=True))
        probs.append(e / e.sum(axis=1, keepdims=True))
    return np.stack(probs), y


def _acc(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(p.argmax(1) == y))


def test_greedy_never_below_the_best_member_on_the_data_it_is_fit_on():
    for seed in range(5):
        probs, y = _members(seed)
        w = greedy_weights(probs, y)
        assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
        assert _acc(np.tensordot(w, probs, axes=1), y) >= max(_acc(p, y) for p in probs)


def test_greedy_ignores_a_useless_member():
    probs, y = _members(1, noise=(0.8, 1.0, 50.0))  # the third member is noise
    w = greedy_weights(probs, y)
    assert w[2] == 0.0 and w[:2].sum() == pytest.approx(1.0)


def test_stacking_fits_a_probability_table_and_learns_a_permuted_member():
    probs, y = _members(2)
    permuted = probs[:, :, ::-1]  # a member whose classes come out in reverse order
    model = fit_stacking(permuted, y)
    out = model.predict(permuted)
    assert out.shape == (len(y), 4) and np.allclose(out.sum(1), 1.0)
    assert _acc(out, y) > 0.6 > _acc(permuted.mean(0), y)


def test_stacking_binary_labels_use_two_columns():
    probs, y = _members(3, c=2)
    out = fit_stacking(probs, y).predict(probs)
    assert out.shape == (len(y), 2) and _acc(out, y) >= max(_acc(p, y) for p in probs) - 0.02


def test_diversity_disagreement_and_oracle():
    y = np.array([0, 1, 1, 0])
    probs = np.stack([np.eye(2)[[0, 1, 0, 0]], np.eye(2)[[0, 0, 1, 1]]]).astype(float)
    disagreement, oracle = diversity(probs, y)
    assert disagreement[0, 1] == pytest.approx(0.75) and disagreement[0, 0] == 0.0
    assert oracle == pytest.approx(1.0)


def test_select_reports_every_candidate_and_keeps_the_best_cross_validated():
    probs, y = _members(4)
    sel = select_ensemble(probs, y, ["a", "b", "c"])
    assert [s.rule for s in sel.scores] == list(SelectionRule)
    best = max((s for s in sel.scores if s.rule in AUTO_RULES), key=lambda s: (s.cv_accuracy, -s.cv_nll))
    assert sel.rule is best.rule and sel.rule is not SelectionRule.STACKING  # stacking: only when forced
    record = sel.to_dict()
    assert set(record["candidates"]) == {r.value for r in SelectionRule}  # stacking still scored and reported
    assert set(record["weights"]) == {"a", "b", "c"} and "a|b" in record["disagreement"]
    assert _acc(sel.predict(probs), y) >= max(sel.member_accuracy) - 1e-9


def test_stacking_is_used_only_when_forced_even_where_it_cross_validates_best():
    """A member permuting its classes: stacking learns the permutation and cross-validates best, but row-level
    folds overstated it on grouped data (module docstring), so selection keeps it for recipes that ask."""
    probs, y = _members(4)
    rng = np.random.default_rng(3)
    perm = rng.permutation(probs.shape[2])
    permuted = probs.copy()
    permuted[0] = probs[0][:, perm]
    sel = select_ensemble(permuted, y, ["a", "b", "c"])
    stacking = next(s for s in sel.scores if s.rule is SelectionRule.STACKING)
    assert stacking.cv_accuracy >= max(s.cv_accuracy for s in sel.scores) and sel.rule is not SelectionRule.STACKING
    assert select_ensemble(permuted, y, ["a", "b", "c"], rule="stacking").rule is SelectionRule.STACKING


def test_a_forced_rule_is_kept_and_drops_are_recorded():
    probs, y = _members(5)
    sel = select_ensemble(probs, y, ["a", "b", "c"], rule="best_member")
    assert sel.rule is SelectionRule.BEST_MEMBER and sorted(sel.weights) == [0.0, 0.0, 1.0]
    assert len(sel.dropped) == 2


def test_bad_inputs_are_config_errors():
    probs, y = _members(6)
    with pytest.raises(ConfigError, match="unknown ensemble rule"):
        select_ensemble(probs, y, ["a", "b", "c"], rule="bagging")
    with pytest.raises(ConfigError, match="must be"):
        select_ensemble(probs, y, ["a", "b"])
    with pytest.raises(ConfigError, match="at least 2 validation samples"):
        select_ensemble(probs[:, :1], y[:1], ["a", "b", "c"])


def _near_copies(seed: int = 0, groups: int = 60, copies: int = 4, k: int = 3, c: int = 4):
    """Members that know nothing (random probabilities per source), each source in ``copies`` identical rows."""
    rng = np.random.default_rng(seed)
    y_group = np.tile(np.arange(c), groups // c)
    rng.shuffle(y_group)
    z = np.exp(rng.normal(0.0, 1.0, (k, groups, c)))
    probs = np.repeat(z / z.sum(axis=2, keepdims=True), copies, axis=1)
    return probs, np.repeat(y_group, copies), np.repeat(np.arange(groups), copies)


def test_grouped_folds_stop_stacking_scoring_on_near_copies_of_its_fit_rows():
    """Row-level folds put copies of a source on both sides: stacking then 'predicts' noise well above chance
    (0.25); folds that keep sources whole score it at chance or below."""
    probs, y, groups = _near_copies()
    by_rows = select_ensemble(probs, y, ["a", "b", "c"])
    by_groups = select_ensemble(probs, y, ["a", "b", "c"], groups=groups)
    stacking = {sel.folds: next(s for s in sel.scores if s.rule is SelectionRule.STACKING).cv_accuracy
                for sel in (by_rows, by_groups)}
    assert stacking["rows"] >= 0.35 and stacking["groups"] <= 0.3
    assert by_groups.to_dict()["folds"] == "groups"


def test_groups_fall_back_to_row_folds_when_a_class_has_one_source():
    probs, y = _members(7)
    assert select_ensemble(probs, y, ["a", "b", "c"], groups=y).folds == "rows"  # every class is one group
    with pytest.raises(ConfigError, match="one per validation row"):
        select_ensemble(probs, y, ["a", "b", "c"], groups=y[:-1])


def test_fit_rows_sharing_a_second_key_with_the_held_out_rows_are_left_out():
    """Copies of a source spoken by different voices: folds over voices alone still fit on copies of the
    held-out rows (stacking well above chance); leaving out rows that share a source with them stops it."""
    probs, y, source = _near_copies(2)
    voice = np.random.default_rng(3).integers(0, 12, len(y))
    names = ["a", "b", "c"]
    by_voice = select_ensemble(probs, y, names, groups=voice)
    purged = select_ensemble(probs, y, names, groups=np.stack([voice, source], axis=1))
    stacking = [next(s for s in sel.scores if s.rule is SelectionRule.STACKING).cv_accuracy for sel in (by_voice, purged)]
    assert by_voice.folds == purged.folds == "groups"
    assert stacking[0] >= 0.35 and stacking[1] <= 0.3


def test_a_split_too_small_to_leave_out_shared_rows_keeps_the_first_key_folds():
    """Four voices, every source spoken by all of them: leaving out the held-out sources would leave no fit row."""
    probs, y, source = _near_copies(0, groups=60, copies=4)
    voice = np.tile(np.arange(4), 60)
    sel = select_ensemble(probs, y, ["a", "b", "c"], groups=np.stack([voice, source], axis=1))
    assert sel.folds == "groups (first key only)" and len(sel.scores) == 3
