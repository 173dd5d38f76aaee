"""The performance targets of the reference bundle, each met or missed by how much, and why.

Computed from the reference bench (``mmedge.bench/1``) and the peers run (``mmedge.peers/1``):
the "why" column names what the time or memory goes to (op-type profile, stage shares,
start-up parts), so a miss says where to work. Rendered at the top of RESULTS.md. The goals are
the reference bundle's, so they live in ``benchmarks/``, not in the installed package.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from render import markdown_table  # benchmarks/render.py, beside this file

from mmedge.bench.peers import best_peer, fastest_mmedge, peer_min_cosine

__all__ = ["TARGETS", "render_targets"]

Report = Mapping[str, Any]

# Issue 18's goals: against fair baselines (one BLAS thread, same text padding on both sides) and
# peers that include OpenVINO. "encoder" is the goal; "encoder_must" the ceiling.
TARGETS = {"encoder": 0.85, "encoder_must": 1.0, "cosine": 0.995, "eager": 0.25, "compile": 0.35,
           "accuracy_points": 0.5, "ensemble_vs_member": 1.05, "first_prediction_s": 0.25, "rss_int8_mib": 100.0,
           "loaded_p90_over_p50": 1.25}


def _verdict(value: float, goal: float, *, at_least: bool = False) -> str:
    met = value >= goal if at_least else value <= goal
    return "met" if met else f"**missed** by {abs(value - goal) / goal:.0%}"


def _encoder_rows(peers: Report) -> list[list[str]]:
    """Per encoder and batch: mmedge's fastest variant (any graph, any backend) / the best peer, both
    among the variants that keep int8's fidelity bar."""
    rows = []
    for modality, enc in peers["encoders"].items():
        cosine = enc["fidelity_vs_pytorch_fp32"].get("mmedge int8", {}).get("min")
        for batch, b in enc["batches"].items():
            fidelity = enc["fidelity_vs_pytorch_fp32"]
            ours, best = fastest_mmedge(b["median_ms"], fidelity), best_peer(b["median_ms"], fidelity)
            if ours is None or best is None:
                continue
            ratio = b["median_ms"][ours] / b["median_ms"][best]
            rows.append([f"{modality} encoder, b{batch}: mmedge's fastest / best peer",
                         f"≤ {TARGETS['encoder_must']}× (goal {TARGETS['encoder']}×); int8 cosine ≥ {TARGETS['cosine']}",
                         f"{ratio:.2f}× ({ours} vs {best}{_own_cosine(ours, fidelity)})"
                         + (f"; int8 cosine {cosine:.4f}" if cosine else ""),
                         _verdict(ratio, TARGETS["encoder"]) + ("" if cosine is None or cosine >= TARGETS["cosine"]
                                                                else "; cosine **missed**"), _kernels(enc)])
    return rows


def _own_cosine(variant: str, fidelity: Mapping[str, Mapping[str, float]]) -> str:
    """The min cosine of mmedge's fastest variant when it is not the int8 graph the cosine target is about."""
    own = fidelity.get(variant, {}).get("min")
    return f"; its min cosine {own:.4f}" if own is not None and variant != "mmedge int8" and own < 0.99995 else ""


def _loaded_rows(report: Report) -> list[list[str]]:
    """``--background-load``: the runtime's p90/p50 beside a numpy thread."""
    loaded = (report.get("background_load") or {}).get("configs", {})
    return [[f"{cid}: p90/p50 beside a numpy load", f"≤ {TARGETS['loaded_p90_over_p50']}",
             f"{c['p90_over_p50_with']:.2f} (p50 {c['without']['p50']:.2f} -> {c['with']['p50']:.2f} ms)",
             _verdict(c["p90_over_p50_with"], TARGETS["loaded_p90_over_p50"]),
             "the load's matmuls take the cores the backend's threads wait for"] for cid, c in loaded.items()]


def _kernels(enc: Mapping[str, Any], top: int = 3) -> str:
    """Kernel time of mmedge int8 vs the peer recipe at batch 1, and mmedge's largest op types."""
    ops = enc.get("op_ms_b1", {})
    ours, peer = ops.get("mmedge int8"), next((v for k, v in ops.items() if k.startswith("peer")), None)
    if not ours or not peer:
        return ""
    largest = ", ".join(f"{op} {ms:.2f}" for op, ms in list(ours.items())[:top])
    return (f"b1 kernels {sum(ours.values()):.2f} ms vs the recipe's {sum(peer.values()):.2f} ms; "
            f"largest: {largest}")


def _fastest_runtime(report: Report, batch: int = 1) -> Mapping[str, Any] | None:
    ours = [c for c in report["configs"] if c["kind"] == "ensemble" and c["batch"] == batch
            and c["precision"] in ("int8", "mixed")]
    return min(ours, key=lambda c: c["latency_ms"]["p50"], default=None)


def _e2e_rows(report: Report) -> list[list[str]]:
    rows, best = [], _fastest_runtime(report)
    if best is None:
        return rows
    where = f"{best['precision']}/{best['backend']}"
    for c in report["comparisons"]:
        if c["batch"] != 1 or not c["name"].startswith(f"runtime {where} / PyTorch"):
            continue
        goal = TARGETS["compile"] if "compile" in c["name"] else TARGETS["eager"]
        disturbed = _disturbed(report, c)
        rows.append([c["name"] + ", b1", f"≤ {goal}×", f"{c['ratio_p50']:.3f}×" + disturbed,
                     _NOT_QUOTABLE if disturbed else _verdict(c["ratio_p50"], goal),
                     _largest_stages(best)])
    for member in (c for c in report["comparisons"] if " / most accurate member" in c["name"]):  # every precision, batch
        disturbed = _disturbed(report, member)
        rows.append([f"{member['name']}, b{member['batch']}", f"≤ {TARGETS['ensemble_vs_member']}×",
                     f"{member['ratio_p50']:.2f}×" + disturbed, _NOT_QUOTABLE if disturbed else
                     _verdict(member["ratio_p50"], TARGETS["ensemble_vs_member"]), _extra_stages(report, member)])
    acc = report["bundle"].get("export_accuracy", {}).get("ensemble", {})
    if best["precision"] in acc and "pytorch" in acc:
        drop = 100 * (acc["pytorch"] - acc[best["precision"]])
        rows.append([f"{best['precision']} ensemble accuracy vs PyTorch (export, "
                     f"{report['bundle']['export_accuracy']['samples']} test rows)",
                     f"within {TARGETS['accuracy_points']} point", f"{drop:+.2f} points "
                     f"({acc[best['precision']]:.2%} vs {acc['pytorch']:.2%})",
                     _verdict(drop, TARGETS["accuracy_points"]), ""])
    return rows


_NOT_QUOTABLE = "**not quotable**: a side was disturbed; re-measure on an idle machine"


def _disturbed(report: Report, comparison: Mapping[str, Any]) -> str:
    """" (disturbed: ...)" when either side's p90/p50 was over the fair-baseline limit."""
    flagged = set((report.get("fairness") or {}).get("disturbed", []))
    sides = [comparison[k] for k in ("numerator", "denominator") if comparison[k] in flagged]
    return f" (disturbed: {', '.join(sides)})" if sides else ""


def _largest_stages(config: Mapping[str, Any], top: int = 3) -> str:
    """The longest stages and their share of the call (encoders in lanes overlap: the shares then add up
    to more than the call)."""
    stages = {k: v["p50"] for k, v in config["stages_ms"].items() if k != "total"}
    total = config["stages_ms"]["total"]["p50"]
    lanes = (config.get("lanes") or {}).get("lanes", 1)
    return "largest stages: " + ", ".join(f"{k} {v:.2f} ms ({v / total:.0%})"
                                          for k, v in sorted(stages.items(), key=lambda kv: -kv[1])[:top]) + \
        (f" of {total:.2f} ms, the encoders in {lanes} lanes at once" if lanes > 1 else "")


def _extra_stages(report: Report, comparison: Mapping[str, Any]) -> str:
    """What the ensemble runs that the member does not: its other heads and the wider combine."""
    by_id = {c["id"]: c for c in report["configs"]}
    ens, mem = by_id[comparison["numerator"]], by_id[comparison["denominator"]]
    extra = {k: v["p50"] for k, v in ens["stages_ms"].items() if k.startswith("head.") and k not in mem["stages_ms"]}
    if not extra:  # selection kept the member alone
        return "no other head: the combine step and run-to-run spread"
    return "the other heads: " + ", ".join(f"{k} {v:.2f} ms" for k, v in sorted(extra.items(), key=lambda kv: -kv[1]))


def _footprint_rows(report: Report) -> list[list[str]]:
    fp = report["memory"].get("torch_free_process") or {}
    rows = [[f"{p}: new process to first prediction", f"≤ {TARGETS['first_prediction_s']} s",
             f"{v['first_prediction_s']:.2f} s", _verdict(v["first_prediction_s"], TARGETS["first_prediction_s"]),
             f"import {v['import_ms']:.0f} ms, open {v['load_ms']:.0f} ms, first predict {v['first_predict_ms']:.0f} "
             f"ms; the rest is process and interpreter start-up (numpy included)" + _first_start_note(v)]
            for p, v in fp.items() if p in ("int8", "mixed")]
    rows += [[f"{p}: resident memory after loading", f"≤ {TARGETS['rss_int8_mib']:.0f} MiB",
              f"{v['rss_after_load_bytes'] / 2**20:.0f} MiB",
              _verdict(v["rss_after_load_bytes"] / 2**20, TARGETS["rss_int8_mib"]),
              f"{v['rss_after_import_bytes'] / 2**20:.0f} MiB after importing the runtime; the rest is ONNX Runtime, "
              "OpenCV and tokenizers loaded by the Session, and the graphs' sessions"]
             for p, v in fp.items() if p in ("int8", "mixed")]
    return rows


def _first_start_note(v: Mapping[str, Any]) -> str:
    """The first of the bench's two starts, when it recorded two (after an export it also verifies the
    bundle and writes ONNX Runtime's graph cache)."""
    first = v.get("first_start")
    return f"; the first of two starts: {first['first_prediction_s']:.2f} s" if first else ""


def _disturbed_note(report: Report) -> str:
    flagged, configs = (report.get("fairness") or {}).get("disturbed", []), report["configs"]
    if not flagged:
        return ""
    return (f" {len(flagged)} of the reference run's {len(configs)} configurations were disturbed (p90/p50 > "
            f"{report['fairness']['disturbed_p90_over_p50']}): the machine was shared with other jobs; ratios with a "
            "disturbed side are marked not quotable.")


def _ensemble_cost_rows(costs: Sequence[tuple[str, Report]]) -> list[list[str]]:
    """Ensemble (merged heads graph) / the member chosen on validation, from each (file name, report) of
    ``benchmarks/ensemble_cost.py`` (one per ensemble timed: every member kept, the members selection kept...)."""
    rows = []
    for source, cost in costs:
        members = cost["bundle"]["members"]
        for r in cost["rows"]:
            disturbed = " (disturbed)" if r["disturbed"] else ""
            ratio, heads = r["paired_ensemble_over_member"]["median"], r["heads_ms"]  # paired: slow spells cancel
            where = (f"after the encoders: {heads['merged']:.2f} ms for every head and the rule vs "
                     f"{heads['member']:.2f} for the member's (ratio of medians {r['ensemble_over_member']:.3f}×)")
            rows.append([f"ensemble of {len(members)} ({', '.join(members)}; one heads graph) / {cost['member']}, "
                         f"{r['precision']} b{r['batch']} ({source})", f"≤ {TARGETS['ensemble_vs_member']}×",
                         f"{ratio:.3f}×" + disturbed, _NOT_QUOTABLE if r["disturbed"] else
                         _verdict(ratio, TARGETS["ensemble_vs_member"]), where])
    return rows


def render_targets(report: Report, peers: Report | None, costs: Sequence[tuple[str, Report]] = ()) -> str:
    """The performance targets, each with the figure that meets or misses it and where the time or
    memory goes (from the reports; ``costs``: ``benchmarks/ensemble_cost.py``'s)."""
    rows = (_encoder_rows(peers) if peers else []) + _e2e_rows(report) + _ensemble_cost_rows(costs) \
        + _loaded_rows(report) + _footprint_rows(report)
    return "\n".join(["## Performance targets\n",
                      "Computed by `benchmarks/targets.py` from the reference bench and the peers "
                      "run below (their commands are in their sections). \"best peer\": the fastest variant that "
                      "is not mmedge's own (PyTorch eager, torch.compile, the peer recipe, or OpenVINO on the fp32 "
                      "or NNCF int8 ONNX) whose pooled output keeps a min cosine to PyTorch fp32 of at least "
                      f"{peer_min_cosine()}, the bar mmedge's own int8 graphs must pass (OpenVINO's NNCF int8 text "
                      "encoder, at its default bf16, is shown in the peers section but not counted). "
                      "Where mmedge's kernels "
                      "take the same time as the recipe's, the gap in the medians is the session's own overhead "
                      "and run-to-run spread (sessions of one graph differ by up to 20% within a run)."
                      + _disturbed_note(report) + "\n",
                      markdown_table(["target", "goal", "measured", "verdict", "where it goes"], rows)])
