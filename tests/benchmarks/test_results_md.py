"""benchmarks/RESULTS.md is generated from the committed result JSONs, never edited by hand."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
from render import render_results  # noqa: E402  (benchmarks/render.py)
import render_ensemble  # noqa: E402,F401  (registers the ensemble renderers)
from targets import TARGETS, render_targets  # noqa: E402  (benchmarks/targets.py)
from make_results import DEFAULT  # noqa: E402  (its renderer imports register every section)
FILES = [BENCH / f for f in DEFAULT]


def test_results_md_is_what_make_results_writes():
    expected = render_results([f for f in FILES if f.is_file()], root=ROOT, targets=True)
    assert (BENCH / "RESULTS.md").read_text(encoding="utf-8") == expected, \
        "regenerate it: python benchmarks/make_results.py"


def test_every_target_has_a_figure_a_verdict_and_a_reason():
    bench, peers = (json.loads((BENCH / f).read_text()) for f in ("results.json", "peers.json"))
    rows = [line for line in render_targets(bench, peers).splitlines() if line.startswith("| ") and "---" not in line]
    body = rows[1:]
    assert len(body) >= 2 * 3 + 5  # 3 encoders x 2 batches, e2e vs eager and compile, ensemble, accuracy, footprint
    for row in body:
        cells = [c.strip() for c in row.strip("|").split("|")]
        # a ratio with a disturbed side (p90/p50 > 1.3, a shared machine) is neither met nor missed
        assert cells[3] == "met" or cells[3].startswith(("**missed** by", "**not quotable**")), row
        assert cells[3] == "met" or cells[4] or "accuracy" in cells[0], f"a miss without its reason: {row}"
    assert set(TARGETS) >= {"encoder", "eager", "compile", "ensemble_vs_member", "first_prediction_s", "rss_int8_mib"}
