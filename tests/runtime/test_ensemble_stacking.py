"""A bundle whose ensemble rule is stacking: the manifest carries the coefficients, Session applies them;
bundles written before (no coefficients, no selection record) open and run as they did."""
from __future__ import annotations

import numpy as np
import pytest

from mmedge.errors import BundleError
from mmedge.runtime import Bundle, Session
from mmedge.runtime.ensemble import Stacking, combine

TEXTS = ["a photo of the digit seven", "three", "a handwritten zero"]


def _stacking(members: int, classes: int = 10) -> Stacking:
    rng = np.random.default_rng(7)
    return Stacking(rng.normal(0, 0.5, (classes, members * classes)), rng.normal(0, 0.1, classes))


def _stacked_bundle(bundle_path, tmp_path, tools, stacking: dict):
    folder = tools.clone(bundle_path, tmp_path / "b")

    def edit(m):
        m["ensemble"] = {"method": "stacking", "stacking": stacking,
                         "selection": {"rule": "stacking", "dropped": [], "oracle_accuracy": 0.9}}
    tools.edit_manifest(folder, edit)
    return folder


def test_session_applies_the_manifest_stacking(bundle_path, session, tmp_path, tools, rng):
    stacking = _stacking(len(session.bundle.members))
    folder = _stacked_bundle(bundle_path, tmp_path, tools, stacking.to_dict())
    images = (rng.random((3, 64, 64, 3)) * 255).astype(np.uint8)
    with Session(folder, threads=2) as stacked:
        assert stacked.bundle.ensemble.method == "stacking" and stacked.bundle.ensemble.selection["rule"] == "stacking"
        pred = stacked.predict(image=images, text=TEXTS, audio=[np.zeros(16000, np.float32)] * 3, audio_rate=16000)
    members = np.stack([pred.member_probabilities[m.name] for m in stacked.bundle.members])
    np.testing.assert_allclose(pred.probabilities, stacking.predict(members), rtol=1e-4, atol=1e-5)
    plain = session.predict(image=images, text=TEXTS, audio=[np.zeros(16000, np.float32)] * 3, audio_rate=16000)
    assert not np.allclose(pred.probabilities, plain.probabilities)  # the rule changed what came out


def test_older_bundle_has_no_stacking_and_runs_its_rule(session):
    ens = session.bundle.ensemble
    assert ens.stacking is None and ens.stacking_model is None and ens.selection is None
    logits = [np.log(np.full((1, 10), 0.1))] * len(session.bundle.members)
    np.testing.assert_allclose(combine(logits, method=ens.method, weights=[m.weight for m in session.bundle.members]),
                               0.1, rtol=1e-5)


@pytest.mark.parametrize("bad", [{"coef": [[1.0, 2.0]], "intercept": [0.0, 1.0]}, {"coef": [[1.0]]}])
def test_unreadable_stacking_coefficients_are_a_bundle_error(bundle_path, tmp_path, tools, bad):
    folder = _stacked_bundle(bundle_path, tmp_path, tools, bad)
    with pytest.raises(BundleError, match="ensemble.stacking"):
        Bundle.open(folder)
