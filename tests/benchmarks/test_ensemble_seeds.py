"""benchmarks/ensemble_seeds.py: the summary says whether the goal is met, and RESULTS.md shows every run."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
from ensemble_seeds import SCHEMA, summarize  # noqa: E402  (benchmarks/ensemble_seeds.py)
from render import render_results  # noqa: E402  (benchmarks/render.py)
import render_ensemble  # noqa: E402,F401  (registers the ensemble renderers)


def _run(seed: int, chosen: float, ensemble: float) -> dict:
    return {"seed": seed, "members": {"a": {"val": 0.9, "test": chosen}, "b": {"val": 0.8, "test": 0.5}},
            "chosen_member": "a", "chosen_test": chosen, "ensemble_test": ensemble, "rule": "greedy",
            "dropped": ["b"] if ensemble == chosen else [], "rules_test": {"best_member": chosen, "greedy": ensemble,
                                                                           "stacking": 0.5}, "soft_vote_test": 0.7}


@pytest.mark.parametrize("pairs, met", [([(0.90, 0.905), (0.80, 0.803)], True),   # +0.5, +0.3 points
                                         ([(0.90, 0.92), (0.80, 0.799)], False),   # one run below its member
                                         ([(0.90, 0.901), (0.80, 0.801)], False)])  # +0.1 on average
def test_summary_goal_needs_every_run_at_least_the_member_and_the_mean_gain(pairs, met):
    s = summarize([_run(i, c, e) for i, (c, e) in enumerate(pairs)], required=2)
    assert s["goal_met"] is met
    assert summarize([_run(i, c, e) for i, (c, e) in enumerate(pairs)])["goal_met"] is None  # 2 of 5 runs
    assert s["runs_at_least_chosen"] == sum(e >= c for c, e in pairs)
    assert s["gain_points_mean"] == pytest.approx(100 * sum(e - c for c, e in pairs) / len(pairs))


def test_results_section_lists_every_run(tmp_path):
    import json

    runs = [_run(0, 0.9, 0.91), _run(1, 0.8, 0.8)]
    report = {"schema": SCHEMA, "command": "python benchmarks/ensemble_seeds.py", "created": "now", "goal_points": 0.3,
              "recipes": {"digits-av": {"runs": runs, "summary": summarize(runs, required=2)}}, "analysis": "Why: because."}
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps(report))
    text = render_results([path])
    assert "### digits-av" in text and "| 1 | 80.00 | 50.00 | a | 80.00 | **80.00** | +0.00 | greedy | b |" in text
    assert "goal **met**" in text and "Why: because." in text
    assert "| **ensemble** | the rule selection kept (greedy) | 85.50 ± 5.50 | 80.00–91.00 |" in text  # the spread


def test_pieces_run_side_by_side_merge_in_seed_order():
    from ensemble_seeds import merge

    def piece(recipe, runs):
        return {"schema": SCHEMA, "command": "x", "created": "2026", "goal_points": 0.3,
                "recipes": {recipe: {"runs": runs, "summary": summarize(runs)}}}

    merged = merge([piece("av", [_run(3, 0.9, 0.95), _run(4, 0.9, 0.9)]), piece("av", [_run(0, 0.8, 0.8)]),
                    piece("match", [_run(0, 0.7, 0.71)])])
    assert [r["seed"] for r in merged["recipes"]["av"]["runs"]] == [0, 3, 4]
    assert merged["recipes"]["av"]["summary"]["runs"] == 3 and merged["recipes"]["match"]["summary"]["runs"] == 1
    assert merged["recipes"]["av"]["summary"]["gain_points_mean"] == pytest.approx(5.0 / 3)


def test_selection_over_the_four_heads_alone_is_summarized_and_rendered_beside_the_library(tmp_path):
    import json

    runs = [dict(_run(0, 0.90, 0.91), four_heads={"chosen_test": 0.89, "ensemble_test": 0.89}),
            dict(_run(1, 0.80, 0.81), four_heads={"chosen_test": 0.80, "ensemble_test": 0.802})]
    s = summarize(runs, required=2)
    assert s["four_heads"]["gain_points_mean"] == pytest.approx(0.1) and s["four_heads"]["goal_met"] is False
    assert "four_heads" not in summarize([_run(0, 0.9, 0.9)])  # older runs: no such record
    report = {"schema": SCHEMA, "command": "c", "created": "now", "goal_points": 0.3,
              "recipes": {"digits-av": {"runs": runs, "summary": s}}}
    (tmp_path / "seeds.json").write_text(json.dumps(report))
    text = render_results([tmp_path / "seeds.json"])
    assert "Selection over the four heads alone" in text and "ensemble 84.60 ± 4.40%" in text and "gain +0.10" in text
