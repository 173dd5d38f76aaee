"""Rich tables shared by the commands: training metrics, bundle contents and accuracy, bench reports, peers."""
from __future__ import annotations

from typing import Any, Mapping

from rich.table import Table

from mmedge.cli.console import console

__all__ = ["metrics_table", "accuracy_table", "precisions_table", "components_table", "summary_table", "stage_table",
           "comparison_table", "peers_table", "print_bench_report"]


def metrics_table(metrics: dict) -> Table:
    """A rich table of test accuracy: baselines, members, ensemble."""
    table = Table(title="test accuracy")
    table.add_column("model")
    table.add_column("kind")
    table.add_column("test accuracy", justify="right")
    for m, v in metrics.get("baselines", {}).items():
        table.add_row(f"{m} only", "single-modality baseline", f"{v['test_accuracy']:.2%}")
    for name, v in metrics["members"].items():
        table.add_row(name, f"member ({v['head']})", f"{v['test_accuracy']:.2%}")
    ens = metrics["ensemble"]
    for key, v in ens.items():
        if key.startswith("test_accuracy_"):
            method = key[len("test_accuracy_"):]
            star = " (used)" if method == ens["method"] else ""
            table.add_row("ensemble", f"{method}{star}", f"{v:.2%}")
    return table


def accuracy_table(manifest: dict) -> Table:
    """Ensemble and member accuracy per precision, next to PyTorch."""
    metrics = manifest.get("metrics", {})
    members = [m["name"] for m in manifest["members"]]
    table = Table(title=f"{manifest.get('name', 'bundle')}: accuracy on {metrics.get('samples', '?')} held-out samples")
    for col in ["precision", "status", "ensemble", *members, "drop (pts)", "measured on", "accuracy reverts"]:
        table.add_column(col)
    if "pytorch" in metrics:
        ref = metrics["pytorch"]
        table.add_row("pytorch", "reference", f"{ref['ensemble']:.2%}", *[f"{ref['members'][m]:.2%}" for m in members],
                      "", "PyTorch (CPU)", "")
    for p, status in manifest.get("precisions", {}).items():
        r = metrics.get(p)
        if r is None:
            table.add_row(p, status, *[""] * (len(members) + 4))
            continue
        table.add_row(p, status if len(status) <= 40 else status[:40] + "...", f"{r['ensemble']:.2%}",
                      *[f"{r['members'].get(m, float('nan')):.2%}" for m in members], f"{r['drop_points']:+.2f}",
                      _measured_on(r.get("measured_on", "")),
                      "; ".join(r.get("accuracy_reverts", r.get("fallback", []))))  # "fallback": older bundles
    for backend, per in metrics.get("backends", {}).items():  # export's figures on other backends (OpenVINO)
        for p, r in per.items():
            cells = [f"{r['ensemble']:.2%}", *[f"{r['members'].get(m, float('nan')):.2%}" for m in members],
                     f"{r['drop_points']:+.2f}"] if "ensemble" in r else [r.get("error", "")[:40], *[""] * len(members), ""]
            table.add_row(f"{p} on {backend}", manifest.get("precisions", {}).get(p, ""), *cells, backend, "")
    return table


def precisions_table(manifest: dict) -> Table:
    """The bundle's precisions: status, and what each is (its record, when this mmedge has it registered)."""
    from mmedge.runtime.precisions import PRECISIONS

    table = Table(title="precisions")
    for col in ("precision", "status", "what it is", "TensorRT builds it from"):
        table.add_column(col)
    for name, status in manifest.get("precisions", {}).items():
        record = PRECISIONS[name] if name in PRECISIONS else None
        what = record.summary if record else "not registered in this mmedge (import the plug-in that registers it)"
        trt = record.tensorrt.source if record and record.tensorrt else "-"
        table.add_row(name, status if len(status) <= 40 else status[:40] + "...", what, trt)
    return table


def _measured_on(text: str) -> str:
    """Short form of a metric's ``measured_on``: a simulation says so."""
    if text.startswith("simulated"):
        return "simulated on ONNX Runtime (CPU)"
    return "ONNX Runtime (CPU)" if "ONNX Runtime" in text else (text or "-")


def components_table(manifest: dict) -> Table:
    """One row per component and precision: file size, parity / fidelity, quantization."""
    table = Table(title="components")
    for col in ("component", "precision", "MB", "vs reference", "on other backends", "notes"):
        table.add_column(col)
    rows = [(f"encoder.{k}", v["graphs"]) for k, v in manifest["encoders"].items()]
    rows += [(f"head.{mb['name']}", mb["graphs"]) for mb in manifest["members"]]
    rows += [("heads (merged)", manifest["ensemble"]["graphs"])] if manifest["ensemble"].get("graphs") else []
    for name, graphs in rows:
        for p, g in graphs.items():
            check = g.get("parity") or g.get("fidelity") or {}
            fig = f"max|d| {check.get('max_abs_diff', float('nan')):.2e}, cos {check.get('min_cosine', float('nan')):.5f}" if check else ""
            note = g.get("kept_float") and "kept fp32" or (g.get("quantization") or {}).get("tool", "")
            table.add_row(name, p, f"{g.get('bytes', 0) / 1e6:.2f}", fig, _backend_checks(g), _mixed_note(g) or note)
    return table


def _backend_checks(entry: Mapping[str, Any]) -> str:
    """Export's check of a graph on other backends (``backends``): cosine, or why it failed; "-": not checked."""
    def one(name: str, r: Mapping[str, Any]) -> str:
        if r.get("error"):
            return f"{name}: failed to run"
        return f"{name}: cos {r.get('min_cosine', float('nan')):.5f}" + ("" if r.get("ok") else " (below its bar)")
    return "; ".join(one(n, r) for n, r in (entry.get("backends") or {}).items()) or "-"


def _mixed_note(entry: Mapping[str, Any]) -> str:
    """``mixed``: the graph chosen (and its backend, when not ONNX Runtime), and every candidate's median
    per row timed at export at each batch size (``<precision>@<backend>``: on another backend)."""
    if "chosen" not in entry:
        return ""
    per_row = entry.get("latency_ms_per_row") or {"1": entry.get("latency_ms_batch1", {})}
    times = "; ".join(f"b{b} " + ", ".join(f"{k} {ms:.2f}" for k, ms in row.items()) for b, row in per_row.items())
    where = f" on {entry['backend']}" if entry.get("backend") else ""
    return f"uses {entry['chosen']}{where} (ms per row: {times})"


def print_bench_report(report: Mapping[str, Any]) -> None:
    """Prints a ``mmedge.bench/1`` report: summary, per-stage and ratio tables, extra lines."""
    env, info = report["environment"], report["bundle"]
    console.print(f"[bold]{info['name']}[/] ({info['size_bytes'] / 1e6:.1f} MB, sha256 {info['sha256'][:12]}) on "
                  f"{env['cpu_model']}, {env['threads']['ort_intra_op']} threads; medians of "
                  f"{report['settings']['iters']} interleaved runs, {report['settings']['warmup']} warm-up excluded")
    console.print(summary_table(report))
    for batch in report["settings"]["batches"]:
        console.print(stage_table(report, batch))
    if report["comparisons"]:
        console.print(comparison_table(report))
    if "peers" in report:
        console.print(peers_table(report["peers"]))
    from mmedge.bench.fairness import report_lines

    for line in _extra_lines(report) + report_lines(report):
        console.print(line)


def _peak_line(peak: Mapping[str, Any]) -> str:
    parts = [f"{k} {v['gops']:.0f} GOP/s" for k, v in peak.items() if isinstance(v, dict)]
    return "matrix-multiply peak: " + ", ".join(parts)


def _extra_lines(report: Mapping[str, Any]) -> list[str]:
    lines = [f"import: {i['statement']!r} {i['median_ms']:.1f} ms (fresh interpreter"
             f"{'; pulled in torch!' if i['torch_imported'] else ', no torch'})" for i in report["import"]]
    lines.append(_peak_line(report["peak"]))
    if report["flops"]["per_sample"] is None:
        lines.append(f"roofline: {report['flops']['note']}")
    mem = report["memory"]
    lines.append(f"peak RSS {mem['peak_rss_bytes'] / 2**20:.0f} MiB (start {mem['rss_start_bytes'] / 2**20:.0f} MiB)")
    for precision, fp in mem.get("torch_free_process", {}).items():
        first = fp.get("first_start")
        lines.append(f"torch-free process, {precision}: RSS {fp['rss_after_load_bytes'] / 2**20:.0f} MiB after load, "
                     f"{fp['rss_after_predict_bytes'] / 2**20:.0f} MiB after the first prediction; first prediction "
                     f"{fp['first_prediction_s']:.2f} s after process start"
                     + (f" (the first start: {first['first_prediction_s']:.2f} s)" if first else ""))
    choice = report.get("member_choice") or {}
    if choice.get("note"):
        lines.append(f"member comparison: {choice['note']}")
    tegra = report["device"]["tegrastats"]
    lines.append("tegrastats: " + (tegra.get("note", "") if not tegra["available"] else
                                   f"GPU load {tegra['gpu_load_pct']}, power mW {tegra['power_mw_mean']}"))
    return lines


def _accuracy_of(report: Mapping[str, Any], cfg: Mapping[str, Any]) -> str:
    if cfg["kind"] == "torch":
        acc = report["accuracy"].get("torch/eager")
        return f"{acc['ensemble']:.1%}" if acc else "-"
    acc = report["accuracy"].get(f"{cfg['precision']}/{cfg['backend']}")
    if not acc:
        return "-"
    value = acc["ensemble"] if cfg["kind"] == "ensemble" else acc["members"].get(cfg["members"][0])
    return f"{value:.1%}" if value is not None else "-"


def summary_table(report: Mapping[str, Any]) -> Table:
    """One row per configuration: end-to-end latency, throughput, load, memory, roofline, accuracy."""
    table = Table(title="end-to-end latency (ms)")
    for col in ("configuration", "p50", "p90", "p99", "mean", "min", "max", "samples/s", "load ms", "RSS Δ MiB",
                "% of peak", "accuracy"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for cfg in report["configs"]:
        lat, roof = cfg["latency_ms"], cfg["roofline"]
        pct = f"{roof['compute']['pct_of_peak']:.1f}" if roof else "-"
        table.add_row(cfg["id"], *(f"{lat[k]:.2f}" for k in ("p50", "p90", "p99", "mean", "min", "max")),
                      f"{lat['throughput_per_s']:.1f}", f"{cfg['load_ms']:.0f}",
                      f"{cfg['rss_delta_bytes'] / 2**20:.0f}", pct, _accuracy_of(report, cfg))
    table.caption = "% of peak: FLOPs of the encoders and heads / their summed median stage time, vs the measured " \
                    "matrix-multiply peak (int8 peak for int8 on ort)"
    return table


def stage_table(report: Mapping[str, Any], batch: int) -> Table:
    """Median (p90) milliseconds per stage, one column per configuration at ``batch``."""
    configs = [c for c in report["configs"] if c["batch"] == batch]
    stages = list(dict.fromkeys(s for c in configs for s in c["stages_ms"]))
    table = Table(title=f"per-stage p50 (p90) ms, batch {batch}")
    table.add_column("stage")
    for c in configs:
        table.add_column(c["id"].rsplit("/b", 1)[0], justify="right")
    for stage in stages:
        cells = [f"{c['stages_ms'][stage]['p50']:.2f} ({c['stages_ms'][stage]['p90']:.2f})"
                 if stage in c["stages_ms"] else "-" for c in configs]
        table.add_row(stage, *cells)
    return table


def comparison_table(report: Mapping[str, Any]) -> Table:
    """Ratios of medians from the same interleaved run (< 1: the numerator is faster)."""
    table = Table(title="ratios of medians (interleaved A/B; < 1 = faster)")
    for col in ("comparison", "batch", "total", "per stage"):
        table.add_column(col, justify="left" if col in ("comparison", "per stage") else "right")
    for c in report["comparisons"]:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in c["stage_ratios_p50"].items() if k != "total")
        table.add_row(c["name"], str(c["batch"]), f"{c['ratio_p50']:.2f}", stages)
    return table


def _peer_role(variant: str, best: str | None, min_cosine: float) -> str:
    from mmedge.bench.peers import CPU_PRECISIONS, is_mmedge, peer_min_cosine

    if variant == best:
        return "best peer"
    if variant in {f"mmedge {p}" for p in CPU_PRECISIONS}:
        return f"{variant} vs best peer ({best})"
    return "not counted: cosine below the bar" if not is_mmedge(variant) and min_cosine < peer_min_cosine() else ""


def peers_table(peers: Mapping[str, Any]) -> Table:
    """A ``mmedge.peers/1`` report: per encoder and batch, each variant's median, ratio to the best peer, fidelity."""
    from mmedge.bench.peers import best_peer, peer_min_cosine

    table = Table(title="encoders vs peers: median ms, ratio to the best peer (< 1: faster), pooled cosine vs "
                        "PyTorch fp32")
    for col in ("encoder", "batch", "variant", "median ms", "/ best peer", "min cosine", "role"):
        table.add_column(col, justify="right" if col in ("batch", "median ms", "/ best peer", "min cosine") else "left")
    for modality, enc in peers["encoders"].items():
        fidelity = enc["fidelity_vs_pytorch_fp32"]
        for batch, entry in enc["batches"].items():
            medians, best = entry["median_ms"], best_peer(entry["median_ms"], fidelity)
            for variant, ms in medians.items():
                role = _peer_role(variant, best, fidelity[variant]["min"])
                table.add_row(f"{modality} ({enc['encoder']})", batch, variant, f"{ms:.2f}",
                              f"{ms / medians[best]:.2f}" if best else "-", f"{fidelity[variant]['min']:.4f}", role)
        table.add_section()
    table.caption = (f"best peer: the fastest variant that is not mmedge's, per batch, among those whose min cosine "
                     f"to PyTorch is at least {peer_min_cosine()} (int8's bar); {peers['threads']} threads, "
                     f"medians of {peers['iters']} interleaved runs ({peers['warmup']} warm-up excluded)")
    return table
