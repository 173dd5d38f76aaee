"""Ensemble combination rules do what they say."""
import numpy as np
import pytest

from mmedge.errors import ConfigError
from mmedge.runtime.ensemble import EnsembleMethod, combine, softmax
from mmedge.ensemble_fit import fit_temperature, fit_weights

RNG = np.random.default_rng(0)
LOGITS = [RNG.normal(size=(6, 4)) * 3 for _ in range(3)]


def test_soft_vote_is_the_mean_of_member_probabilities():
    expected = np.mean([softmax(lg) for lg in LOGITS], axis=0)
    np.testing.assert_allclose(combine(LOGITS, method="soft_vote"), expected, rtol=1e-6)


def test_weighted_mean_uses_normalized_weights_and_temperatures():
    w, t = [3.0, 1.0, 0.0], [0.5, 2.0, 1.0]
    expected = (3 * softmax(LOGITS[0] / 0.5) + softmax(LOGITS[1] / 2.0)) / 4
    out = combine(LOGITS, method=EnsembleMethod.WEIGHTED_MEAN, weights=w, temperatures=t)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-6)


def test_majority_vote_follows_the_majority_not_the_confident_minority():
    confident = np.array([[20.0, 0.0, 0.0]])
    weak = np.array([[0.0, 0.1, 0.0]])
    out = combine([confident, weak, weak], method="majority_vote")
    assert out.argmax() == 1
    np.testing.assert_allclose(out[0, :2], [1 / 3, 2 / 3], atol=1e-4)
    # the soft rules follow the confident member instead
    assert combine([confident, weak, weak], method="soft_vote").argmax() == 0


def test_majority_vote_tie_is_broken_by_mean_probability():
    a, b = np.array([[3.0, 0.0]]), np.array([[0.0, 0.5]])
    assert combine([a, b], method="majority_vote").argmax() == 0


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown ensemble method 'median'.*weighted_mean"):
        combine(LOGITS, method="median")


@pytest.mark.parametrize("weights", [[1.0, 2.0], [1.0, -1.0, 1.0], [0.0, 0.0, 0.0], [1.0, float("nan"), 1.0]])
def test_bad_weights_are_rejected(weights):
    with pytest.raises(ConfigError, match="weights"):
        combine(LOGITS, method="weighted_mean", weights=weights)


def test_zero_temperature_is_rejected():
    with pytest.raises(ConfigError, match="temperatures"):
        combine(LOGITS, method="soft_vote", temperatures=[1.0, 0.0, 1.0])


def test_fit_temperature_recovers_an_overconfident_scale():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 2000)
    true_logits = rng.normal(size=(2000, 5)) + 2.0 * np.eye(5)[y]
    # labels drawn from softmax(true_logits); the model reports 4x the logits (overconfident)
    p = softmax(true_logits)
    y = np.array([rng.choice(5, p=pi / pi.sum()) for pi in p.astype(np.float64)])
    t = fit_temperature(4.0 * true_logits, y)
    assert 3.0 < t < 5.3


def test_fit_weights_prefers_the_better_member():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 500)
    good = softmax(5.0 * np.eye(3)[y] + rng.normal(size=(500, 3)))
    bad = softmax(rng.normal(size=(500, 3)))
    w = fit_weights(np.stack([good, bad]), y)
    assert w[0] > 0.8 and abs(w.sum() - 1) < 1e-6
