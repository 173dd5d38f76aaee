"""RESULTS.md sections for issue 19: the ensemble against the member chosen on validation over several
training runs (``benchmarks/ensemble_seeds.py``) and the ensemble's latency cost
(``benchmarks/ensemble_cost.py``). Imported by ``make_results.py``, which registers them with ``render.py``.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from render import markdown_table, register_renderer

Report = Mapping[str, Any]


@register_renderer("mmedge.ensemble_seeds/1")
def render_ensemble_seeds(report: Report, source: str) -> str:
    """The section of one ``benchmarks/ensemble_seeds.py`` run: the ensemble against the member chosen on validation."""
    parts = [f"## Ensemble vs the member chosen on validation, several training runs ({source})\n",
             f"```bash\n{report['command']}\n```\n",
             f"{report['created']}. Test-split accuracy; the chosen member is the most accurate on validation (the "
             f"bench's rule); the ensemble is the rule ensemble selection kept by cross-validation on validation. "
             f"Goal: ensemble >= chosen member in every run, +{report['goal_points']} points on average.\n"]
    for name, rec in report["recipes"].items():
        members = list(rec["runs"][0]["members"])
        rows = [[r["seed"], *[f"{100 * r['members'][m]['test']:.2f}" for m in members], r["chosen_member"],
                 f"{100 * r['chosen_test']:.2f}", f"**{100 * r['ensemble_test']:.2f}**",
                 f"{100 * (r['ensemble_test'] - r['chosen_test']):+.2f}", r["rule"], ", ".join(r["dropped"]) or "-",
                 " / ".join(f"{100 * v:.2f}" for v in r["rules_test"].values())] for r in rec["runs"]]
        s = rec["summary"]
        parts += [f"### {name}\n", seed_spread_table(rec["runs"]), markdown_table(["seed", *members, "chosen", "chosen %", "ensemble %", "gain (pts)",
                                                  "rule kept", "dropped", "best member / greedy / stacking %"], rows),
                  f"Ensemble {100 * s['ensemble_mean']:.2f} ± {100 * s['ensemble_std']:.2f}%, chosen member "
                  f"{100 * s['chosen_mean']:.2f} ± {100 * s['chosen_std']:.2f}% (mean ± std over {s['runs']} runs); "
                  f"gain {s['gain_points_mean']:+.2f} points on average (min {s['gain_points_min']:+.2f}, max "
                  f"{s['gain_points_max']:+.2f}); ensemble >= chosen in {s['runs_at_least_chosen']}/{s['runs']} runs: "
                  f"goal **{ {True: 'met', False: 'missed', None: 'not judged (too few runs)'}[s['goal_met']]}**.\n"
                  + _four_heads(s.get("four_heads"))]
    if report.get("analysis"):
        parts.append(report["analysis"] + "\n")
    return "\n".join(parts)


def _four_heads(s: Mapping[str, Any] | None) -> str:
    if not s:
        return ""
    return (f"\nSelection over the four heads alone (the same trained heads, the further seeds left out: the recipe "
            f"before its library): ensemble {100 * s['ensemble_mean']:.2f} ± {100 * s['ensemble_std']:.2f}%, chosen "
            f"member {100 * s['chosen_mean']:.2f} ± {100 * s['chosen_std']:.2f}%, gain {s['gain_points_mean']:+.2f} "
            f"points (min {s['gain_points_min']:+.2f}); ensemble >= chosen in {s['runs_at_least_chosen']}/{s['runs']} "
            "runs.\n")


def seed_spread_table(runs: list[dict[str, Any]]) -> str:
    """Test accuracy per model over the runs: mean ± std and min–max (the README's accuracy tables)."""
    def spread(values: list[float]) -> list[str]:
        v = 100 * np.asarray(values)
        return [f"{v.mean():.2f} ± {v.std():.2f}", f"{v.min():.2f}–{v.max():.2f}"]

    members = list(runs[0]["members"])
    rows = [[m, "member", *spread([r["members"][m]["test"] for r in runs])] for m in members]
    rows += [["member chosen on validation", "what a user would deploy instead", *spread([r["chosen_test"] for r in runs])],
             ["**ensemble**", "the rule selection kept (" + ", ".join(sorted({r["rule"] for r in runs})) + ")",
              *spread([r["ensemble_test"] for r in runs])],
             ["ensemble, soft vote", "every member, equal weights", *spread([r["soft_vote_test"] for r in runs])]]
    return markdown_table(["model", "kind", f"test accuracy %, mean ± std ({len(runs)} runs)", "min–max %"], rows)


@register_renderer("mmedge.ensemble_cost/1")
def render_ensemble_cost(report: Report, source: str) -> str:
    """The section of one ``benchmarks/ensemble_cost.py`` run: the ensemble's latency over the chosen member's."""
    b = report["bundle"]
    rows = [[r["precision"], r["batch"], f"{r['member']['p50_ms']:.2f}", f"{r['merged']['p50_ms']:.2f}",
             f"{r['separate']['p50_ms']:.2f}", f"{r['ensemble_over_member']:.3f}×",
             _paired(r["paired_ensemble_over_member"]),
             f"{r['separate_over_member']:.3f}×", f"{r['merged_over_separate']:.3f}×",
             f"{r['heads_ms']['member']:.2f} / {r['heads_ms']['merged']:.2f}", "yes" if r["disturbed"] else ""]
            for r in report["rows"]]
    recipe = report.get("recipe")
    kept = (f"only the members {', '.join(recipe['members'])} kept" if recipe and recipe.get("members")
            else "every member kept")
    made = (f"a `{recipe['name']}` bundle trained on {recipe['subset']} rows with {kept} and the {recipe['rule']} rule, "
            "so every member trained stays in it (the graphs, so the latency, are the full recipe's; only accuracy differs)"
            if recipe else f"the bundle `{b['path']}`")
    env = report["environment"]
    missing = "".join(f"Not timed: {p} ({why}).\n" for p, why in (b.get("not_ok") or {}).items())
    missing += "".join(f"Not timed: {p} (the member's own bundle: {why}).\n"
                       for p, why in (report.get("member_not_ok") or {}).items())
    return "\n".join([
        f"## The ensemble's cost: one graph for all heads vs the member chosen on validation ({source})\n",
        f"```bash\n{report['command']}\n```\n",
        f"{report['created']}: {made}; members {', '.join(b['members'])} (rule {b['rule']}); chosen member "
        f"`{report['member']}` (most accurate on validation). ONNX Runtime, {env['threads']} threads, "
        f"{env['iters']} interleaved runs per configuration after {env['warmup']} warm-up runs, medians of whole "
        "`Session.predict` calls on real test rows (preprocessing included, text cache off). *merged*: the ensemble "
        "with its merged heads graph (one runner for every head and the rule); *separate*: the same bundle without it "
        "(one runner per head plus the numpy rule, as older bundles run)"
        + (f"; *member*: the chosen member's own bundle (`{report['member_bundle']}`: the same checkpoint exported as "
           "when selection keeps that member alone, its head and rule as one graph)" if report.get("member_bundle")
           else "; *member*: the chosen member run from the ensemble's bundle (its head and the numpy rule)")
        + ". The three share one set of encoder runners per precision (the same graphs: Sessions of one graph "
        "differ by up to 20% within a run), so they differ only in what runs after the encoders (*after the "
        "encoders*: the heads and the rule, medians of the Session's own stage timings). *paired*: the median "
        "over iterations of ensemble / member from the same pass over the configurations (a slow spell of the "
        "machine moves both; quartiles in brackets), the figure the targets table quotes. Merged graph vs separate "
        "heads + numpy rule, "
        f"max abs diff on the export's parity cases: {b['merged_parity_max_abs_diff']}. The machine was shared with "
        f"other jobs (load average {env['load_average'][0]:.1f} on {env['cpus']} CPUs): quote the ratios, measured "
        f"side by side, not the times; configurations with p90/p50 > {report['disturbed_p90_over_p50']} are "
        f"marked disturbed. Goal: ensemble / chosen member <= {report['goal']}×.\n",
        markdown_table(["precision", "batch", "member ms", "ensemble (merged) ms", "ensemble (separate) ms",
                        "ensemble / member (medians)", "ensemble / member (paired)", "separate / member",
                        "merged / separate", "after the encoders, member / ensemble ms", "disturbed"], rows), missing])


def _paired(paired: dict[str, float]) -> str:
    """The paired ratio's median (bold: the targets table quotes it) and quartiles."""
    return f"**{paired['median']:.3f}×** ({paired['q25']:.3f}–{paired['q75']:.3f})"
