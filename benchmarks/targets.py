"""The performance targets of the reference bundle, each met or missed by how much, and why.

Computed from the reference bench (``mmedge.bench/1``) and the peers run (``mmedge.peers/1``):
the "why" column names what the time or memory goes to (op-type profile, stage shares,
start-up parts), so a miss says where to work. Rendered at the top of RESULTS.md. The goals are
the reference bundle's, so they live in ``benchmarks/``, not in the installed package.
"""
from __future__ import annotations

from typing import Any, Mapping

from render import markdown_table  # benchmarks/render.py, beside this file

__all__ = ["TARGETS", "render_targets"]

Report = Mapping[str, Any]

TARGETS = {"encoder": 0.85, "cosine": 0.995, "eager": 0.12, "compile": 0.3, "accuracy_points": 0.5,
            "ensemble_vs_member": 1.05, "first_prediction_s": 0.3, "rss_int8_mib": 100.0}


def _verdict(value: float, goal: float, *, at_least: bool = False) -> str:
    met = value >= goal if at_least else value <= goal
    return "met" if met else f"**missed** by {abs(value - goal) / goal:.0%}"


def _encoder_rows(peers: Report) -> list[list[str]]:
    rows = []
    for modality, enc in peers["encoders"].items():
        cosine = enc["fidelity_vs_pytorch_fp32"].get("mmedge int8", {}).get("min")
        for batch, b in enc["batches"].items():
            others = {k: v for k, v in b["median_ms"].items() if not k.startswith("mmedge")}
            if "mmedge int8" not in b["median_ms"] or not others:
                continue
            best = min(others, key=others.get)
            ratio = b["median_ms"]["mmedge int8"] / others[best]
            rows.append([f"{modality} int8 encoder, b{batch}", f"≤ {TARGETS['encoder']}× best peer, cosine ≥ "
                         f"{TARGETS['cosine']}", f"{ratio:.2f}× {best}; cosine {cosine:.4f}",
                         _verdict(ratio, TARGETS["encoder"]) + ("" if cosine >= TARGETS["cosine"] else
                                                                 "; cosine **missed**"), _kernels(enc)])
    return rows


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
        rows.append([c["name"] + ", b1", f"≤ {goal}×", f"{c['ratio_p50']:.3f}×", _verdict(c["ratio_p50"], goal),
                     _largest_stages(best)])
    for member in (c for c in report["comparisons"] if " / most accurate member" in c["name"]):  # every precision, batch
        rows.append([f"{member['name']}, b{member['batch']}", f"≤ {TARGETS['ensemble_vs_member']}×",
                     f"{member['ratio_p50']:.2f}×", _verdict(member["ratio_p50"], TARGETS["ensemble_vs_member"]),
                     _extra_stages(report, member)])
    acc = report["bundle"].get("export_accuracy", {}).get("ensemble", {})
    if best["precision"] in acc and "pytorch" in acc:
        drop = 100 * (acc["pytorch"] - acc[best["precision"]])
        rows.append([f"{best['precision']} ensemble accuracy vs PyTorch (export, "
                     f"{report['bundle']['export_accuracy']['samples']} test rows)",
                     f"within {TARGETS['accuracy_points']} point", f"{drop:+.2f} points "
                     f"({acc[best['precision']]:.2%} vs {acc['pytorch']:.2%})",
                     _verdict(drop, TARGETS["accuracy_points"]), ""])
    return rows


def _largest_stages(config: Mapping[str, Any], top: int = 3) -> str:
    stages = {k: v["p50"] for k, v in config["stages_ms"].items() if k != "total"}
    total = config["stages_ms"]["total"]["p50"]
    return "largest stages: " + ", ".join(f"{k} {v:.2f} ms ({v / total:.0%})"
                                          for k, v in sorted(stages.items(), key=lambda kv: -kv[1])[:top])


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
             f"ms; the rest is process and interpreter start-up (numpy included)"]
            for p, v in fp.items() if p in ("int8", "mixed")]
    rows += [[f"{p}: resident memory after loading", f"≤ {TARGETS['rss_int8_mib']:.0f} MiB",
              f"{v['rss_after_load_bytes'] / 2**20:.0f} MiB",
              _verdict(v["rss_after_load_bytes"] / 2**20, TARGETS["rss_int8_mib"]),
              f"{v['rss_after_import_bytes'] / 2**20:.0f} MiB after importing the runtime; the rest is ONNX Runtime, "
              "OpenCV and tokenizers loaded by the Session, and the graphs' sessions"]
             for p, v in fp.items() if p in ("int8", "mixed")]
    return rows


def render_targets(report: Report, peers: Report | None) -> str:
    """The performance targets, each with the figure that meets or misses it and where the time or
    memory goes (from the two reports)."""
    rows = (_encoder_rows(peers) if peers else []) + _e2e_rows(report) + _footprint_rows(report)
    return "\n".join(["## Performance targets\n",
                      "Computed by `benchmarks/targets.py` from the reference bench and the peers "
                      "run below (their commands are in their sections). \"best peer\": the fastest variant that "
                      "is not mmedge's own (PyTorch eager, torch.compile or the peer recipe). Where mmedge's kernels "
                      "take the same time as the recipe's, the gap in the medians is the session's own overhead "
                      "and run-to-run spread (sessions of one graph differ by up to 20% within a run).\n",
                      markdown_table(["target", "goal", "measured", "verdict", "where it goes"], rows)])
