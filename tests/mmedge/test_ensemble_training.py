"""Ensemble selection wired into training: the fit, the checkpoint record, dropped members, stacking."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmedge.checkpoint import load_checkpoint, save_checkpoint
from mmedge.config import MemberConfig, Recipe, get_recipe
from mmedge.encoders import create_encoder, freeze
from mmedge.ensemble_selection import SelectionRule
from mmedge.errors import ConfigError
from mmedge.model import MultimodalEnsemble, build_head
from mmedge.runtime.ensemble import EnsembleMethod, MemberRule, Stacking, combine, ensemble_prediction, softmax
from mmedge.training import EnsembleFit, ensemble_metrics, fit_ensemble

NAMES = ("concat", "bilinear", "cross_attention", "contrastive")


def _four(name: str) -> Recipe:
    """A reference recipe with its four heads only (``NAMES``; the library's further seeds left out)."""
    recipe = get_recipe(name)
    return recipe.replace(members=recipe.members[:4])


def _logits(seed: int = 0, n: int = 400, c: int = 5, noise=(1.0, 1.2, 1.5, 60.0)) -> tuple[list[np.ndarray], np.ndarray]:
    """Four members' logits over the same labels; the last is noise (it adds nothing)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    return [np.eye(c)[y] * 3.0 + rng.normal(0.0, s, (n, c)) for s in noise], y


def _acc(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(p.argmax(-1) == y))


def test_default_recipe_selects_and_never_loses_to_its_best_member_on_validation():
    recipe = _four("digits-av")
    logits, y = _logits()
    fit = fit_ensemble(recipe, logits, y)
    assert fit.selection is not None and fit.selection.rule in tuple(SelectionRule)
    assert fit.method is (EnsembleMethod.STACKING if fit.selection.rule is SelectionRule.STACKING
                          else EnsembleMethod.WEIGHTED_MEAN)
    assert len(fit.weights) == 4 and sum(fit.weights) == pytest.approx(1.0)
    record = fit.selection.to_dict()
    assert set(record["candidates"]) == {r.value for r in SelectionRule}
    assert set(record["disagreement"]) and 0.0 < record["oracle_accuracy"] <= 1.0


@pytest.mark.parametrize("rule", ["best_member", "greedy"])
def test_forced_weighted_rules_are_at_least_the_best_member_on_validation(rule):
    recipe = _four("digits-av").replace(ensemble_rule=rule)
    logits, y = _logits(1)
    fit = fit_ensemble(recipe, logits, y)
    assert fit.selection.rule.value == rule and fit.method is EnsembleMethod.WEIGHTED_MEAN and fit.stacking is None
    probs = combine(logits, method=fit.method, weights=fit.weights, temperatures=fit.temperatures)
    assert _acc(probs, y) >= max(_acc(lg, y) for lg in logits)
    assert fit.weights[3] == 0.0 and "contrastive" in fit.selection.dropped  # the noise member adds nothing


def test_stacking_recipe_forces_stacking_and_the_runtime_applies_it():
    recipe = _four("digits-av").replace(ensemble="stacking")
    logits, y = _logits(2)
    fit = fit_ensemble(recipe, logits, y)
    assert fit.method is EnsembleMethod.STACKING and isinstance(fit.stacking, Stacking)
    probs = np.stack([softmax(lg, t) for lg, t in zip(logits, fit.temperatures)])
    np.testing.assert_allclose(combine(logits, method="stacking", temperatures=fit.temperatures, stacking=fit.stacking),
                               fit.selection.predict(probs), rtol=1e-5, atol=1e-6)


def test_soft_and_majority_vote_select_nothing():
    logits, y = _logits(3)
    soft = fit_ensemble(_four("digits-av").replace(ensemble="soft_vote"), logits, y)
    assert soft.selection is None and soft.weights == [1.0] * 4
    vote = fit_ensemble(_four("digits-av").replace(ensemble="majority_vote"), logits, y)
    assert vote.selection is None and vote.method is EnsembleMethod.MAJORITY_VOTE


def test_metrics_score_the_fitted_rule_and_every_candidate_on_test():
    logits, y = _logits(4, n=600)
    val, test = [lg[:300] for lg in logits], [lg[300:] for lg in logits]
    fit = fit_ensemble(_four("digits-av"), val, y[:300])
    out = ensemble_metrics(_four("digits-av"), test, y[300:], fit, val=(val, y[:300]))
    expected = _acc(combine(test, method=fit.method, weights=fit.weights, temperatures=fit.temperatures,
                            stacking=fit.stacking), y[300:])
    assert out["test_accuracy"] == expected and out["method"] == fit.method.value
    assert set(out["rules_test_accuracy"]) == {r.value for r in SelectionRule}
    assert out["selection"]["rule"] == fit.selection.rule.value


def test_recipe_rule_is_typed_and_round_trips():
    recipe = _four("digits-match").replace(ensemble_rule="greedy")
    assert recipe.ensemble_rule is SelectionRule.GREEDY
    assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    assert _four("digits-match").to_dict()["ensemble_rule"] is None
    with pytest.raises(ConfigError, match="unknown ensemble rule 'vote'"):
        recipe.replace(ensemble_rule="vote")
    with pytest.raises(ConfigError, match="does not go with ensemble 'soft_vote'"):
        recipe.replace(ensemble="soft_vote")
    with pytest.raises(ConfigError, match="does not go with ensemble 'stacking'"):
        recipe.replace(ensemble="stacking")


def _audio_model(fit: EnsembleFit) -> MultimodalEnsemble:
    recipe = Recipe(name="audio-test", dataset="x.jsonl", task="classification", modalities=("audio",),
                    ensemble=fit.method,
                    members=tuple(MemberConfig(n, "concat", ("audio",), hidden=16, seed=i) for i, n in enumerate(NAMES)))
    enc = create_encoder("audio_cnn")
    enc.trained_here = True
    heads = {mb.name: build_head(mb, recipe, {"audio": enc.dim}, 5) for mb in recipe.members}
    return MultimodalEnsemble(recipe, {"audio": freeze(enc)}, heads, fit.temperatures, fit.weights,
                              method=fit.method, stacking=fit.stacking).eval()


def _inputs() -> dict[str, torch.Tensor]:
    return {"mel": torch.randn(3, 1, 64, 101, generator=torch.Generator().manual_seed(0))}  # (B, 1, mels, frames)


@pytest.mark.parametrize("rule", ["stacking", "greedy"])
def test_checkpoint_keeps_the_rule_and_export_drops_weight_zero_members(tmp_path, rule):
    logits, y = _logits(5)
    fit = fit_ensemble(_four("digits-av").replace(ensemble_rule=rule), logits, y)
    model = _audio_model(fit)
    out = save_checkpoint(tmp_path / "ck", model, labels=list("abcde"), metrics={}, tokenizer_file=None,
                          extra={"ensemble_selection": fit.selection.to_dict()})
    meta = json.loads((out / "recipe.json").read_text())
    assert meta["ensemble"]["method"] == fit.method.value and meta["ensemble_selection"]["rule"] == rule
    loaded, _ = load_checkpoint(out)
    inputs = _inputs()
    np.testing.assert_allclose(loaded.predict_proba(inputs), model.predict_proba(inputs), rtol=1e-5, atol=1e-6)
    kept, _ = load_checkpoint(out, drop_unused=True)
    expected = [n for n, w in zip(NAMES, fit.weights) if w > 0]
    assert [mb.name for mb in kept.recipe.members] == list(kept.heads) == expected
    assert kept.recipe.ensemble is kept.method is fit.method  # what the manifest states
    assert (len(expected) < 4) == (rule == "greedy")
    np.testing.assert_allclose(kept.predict_proba(inputs), model.predict_proba(inputs), rtol=1e-5, atol=1e-6)
    from mmedge.evaluation import TorchReference  # the bench's PyTorch baseline does the bundle's work, no more

    assert list(TorchReference.from_checkpoint(out, drop_unused=True).model.heads) == expected


def test_checkpoint_written_before_selection_loads_with_the_recipe_method(tmp_path):
    logits, y = _logits(6)
    fit = fit_ensemble(_four("digits-av").replace(ensemble="soft_vote"), logits, y)
    out = save_checkpoint(tmp_path / "ck", _audio_model(fit), labels=list("abcde"), metrics={}, tokenizer_file=None)
    meta = json.loads((out / "recipe.json").read_text())
    del meta["ensemble"]
    (out / "recipe.json").write_text(json.dumps(meta))
    loaded, _ = load_checkpoint(out, drop_unused=True)
    assert loaded.method is EnsembleMethod.SOFT_VOTE and loaded.stacking is None and len(loaded.heads) == 4


def test_stacking_needs_its_model_and_falls_back_when_members_are_skipped():
    logits, y = _logits(7)
    fit = fit_ensemble(_four("digits-av").replace(ensemble="stacking"), logits, y)
    with pytest.raises(ConfigError, match="stacking rule needs its fitted coefficients"):
        combine(logits, method="stacking")
    with pytest.raises(ConfigError, match="coef \\(C, K\\*C\\)"):
        Stacking(np.zeros((5, 7)), np.zeros(5))
    members = [MemberRule(n, w, t) for n, w, t in zip(NAMES, fit.weights, fit.temperatures)]
    named = dict(zip(NAMES, logits))
    kw = dict(method="stacking", labels=list("abcde"), backend="test", precision="fp32", stacking=fit.stacking)
    full = ensemble_prediction(named, members, **kw)
    np.testing.assert_allclose(full.probabilities, combine(logits, method="stacking", temperatures=fit.temperatures,
                                                           stacking=fit.stacking), rtol=1e-6)
    part = ensemble_prediction(named, members[:2], **kw)  # an optional modality left out: weights combine them
    np.testing.assert_allclose(part.probabilities, combine(logits[:2], method="weighted_mean", weights=fit.weights[:2],
                                                           temperatures=fit.temperatures[:2]), rtol=1e-6)


def test_feature_rows_keep_their_source_groups():
    from mmedge.features import FeatureSet

    fs = FeatureSet({"image_pooled": torch.arange(6.0)[:, None]}, torch.arange(6), np.array([0, 0, 1, 1, 2, 2]))
    part = fs.take([1, 2, 5])
    assert part.groups.tolist() == [0, 1, 2] and part.y.tolist() == [1, 2, 5]
    assert FeatureSet(fs.feats, fs.y).take([0]).groups is None
