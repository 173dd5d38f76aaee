"""Property-based fuzzing in CI (a few thousand cases of ``benchmarks/fuzz.py``): ``Session.predict``
on arbitrary arguments, ``Bundle.open`` on mutated manifests, damaged graphs and random zip entries.
The only allowed outcomes are a valid ``Prediction`` or a typed ``mmedge`` error (issue 11)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import fuzz  # noqa: E402  (benchmarks/fuzz.py)

EXAMPLES = {"predict": 900, "manifest": 900, "graph": 150, "zip": 400}


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory):
    f = fuzz.Fuzzer(tmp_path_factory.mktemp("fuzz"))
    yield f
    f.close()


def _outcomes(fuzzer, target: str) -> dict[str, int]:
    return {o: n for (t, o), n in fuzzer.outcomes.items() if t == target}


@pytest.mark.parametrize("target", list(EXAMPLES))
def test_fuzz(fuzzer, target):
    check = getattr(fuzzer, f"check_{target}")
    fuzz.run_property(check, fuzz.STRATEGIES[target], EXAMPLES[target])
    outcomes = _outcomes(fuzzer, target)
    print(target, outcomes)
    assert sum(outcomes.values()) >= EXAMPLES[target] // 2
    assert len(outcomes) >= 2, f"the {target} fuzzer found only {outcomes}: it does not explore"


def test_fuzz_predict_on_the_real_bundle(session):
    """The same arguments on the real encoders (EfficientNet-Lite0, MiniLM): fewer cases, real graphs."""
    real = fuzz.Fuzzer.__new__(fuzz.Fuzzer)
    real.session, real.outcomes = session, fuzz.Counter()
    fuzz.run_property(real.check_predict, fuzz.PREDICT, 150)
    outcomes = _outcomes(real, "predict")
    print("predict (real bundle)", outcomes)
    assert "Prediction" in outcomes


@pytest.mark.parametrize("target, case, outcome", [
    # a bit flip in a graph's dim name: undecodable UTF-8 in ONNX Runtime's metadata
    ("graph", (2, "flip", [(1201, 7)], b"", True), "BundleError"),
    # a bit flip in a label ("cat" -> another name): still a valid bundle
    ("manifest", ("flip", 92, 0), "Prediction"),
])
def test_fuzz_findings_stay_fixed(fuzzer, target, case, outcome):
    assert getattr(fuzzer, f"check_{target}")(case) == outcome
