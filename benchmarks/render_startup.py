"""RESULTS.md sections for issue 18: start-up and memory (``benchmarks/startup.py``), the encoders' int8
fidelity (``benchmarks/image_int8_fidelity.py``) and the encoders at once (``benchmarks/encoder_lanes.py``).
Imported by ``make_results.py``, which registers them with ``render.py``.
"""
from __future__ import annotations

import shlex
from typing import Any, Mapping

from render import markdown_table, register_renderer

Report = Mapping[str, Any]
BUNDLE = ("The bundle (`--bundle`) is the reference `digits-av` bundle as `mmedge demo` writes it "
          "(`bundles/digits-av`: the reference recipe trained and exported with the default precisions).")


def _machine(report: Report) -> str:
    m = report.get("machine") or {}
    load = m.get("load_average")
    return (f"{m.get('cpus', '?')} cores shared with other sessions' work"
            + (f" (load average {load[0]:.1f} at the start)" if load else "") + f", {m.get('utc', '')}")


def _bytecode(report: Report) -> str:
    b = report.get("bytecode")
    if not b:
        return ""
    return (" The runtime's modules were byte-compiled first, as `pip install` leaves them (`compile_bytecode`; "
            f"PYTHONDONTWRITEBYTECODE={b.get('PYTHONDONTWRITEBYTECODE')} here)." if b.get("compiled") else
            " The runtime's modules could not be byte-compiled: fresh processes compiled them from source.")


@register_renderer("mmedge.startup/1")
def render_startup(report: Report, source: str) -> str:
    """Fresh-process start-up and memory per precision / backend / cache, steady state, where it goes."""
    rows = [[key, f"{s['first_prediction_s']:.2f}", f"{s['start_ms']:.0f}", f"{s['import_ms']:.0f}",
             f"{s['load_ms']:.0f}", f"{s['first_predict_ms']:.0f}", f"{s['rss_after_load_mib']:.0f}",
             f"{s['rss_after_predict_mib']:.0f}", f"{s['peak_rss_mib']:.0f}", s["backend"]]
            for key, s in report["cold"]["configs"].items()]
    first = "; ".join(f"{k} {s['first_prediction_s']:.2f} s (open {s['load_ms']:.0f} ms)"
                      for k, s in report["cold"]["first_start"].items())
    steady = [[k, f"{v['p50_ms']:.2f}", f"{v['p90_ms']:.2f}"] for k, v in report["steady_state"].items()]
    arena = "; ".join(f"{p}: " + ", ".join(f"{k} {v['rss_mib']:.1f} MiB" for k, v in a.items())
                      for p, a in report.get("arena_memory", {}).items())
    where = "\n".join(f"- {p}: " + "; ".join(f"{s['step']} {s['ms']:.0f} ms +{s['rss_delta_mib']:.1f} MiB"
                                           for s in steps) for p, steps in report["breakdown"].items())
    return (f"## Start-up and memory of a fresh torch-free process (`{source}`)\n\n"
            f"`{' '.join(report['command'])}`, {report['threads']} threads, on {_machine(report)}. {BUNDLE} Medians of "
            "fresh processes (interleaved); first prediction counted from the spawn call (process, interpreter "
            "and numpy included: `start`); memory is the process's resident set (peak: `VmHWM`). `cache`: ONNX "
            "Runtime's optimized graphs on disk (`runtime/backends/ort_cache.py`), `off` as before it."
            + _bytecode(report) + "\n\n"
            + markdown_table(["config", "first prediction s", "start ms", "import ms", "open ms", "predict ms",
                              "RSS loaded MiB", "RSS predicted MiB", "peak MiB", "backend"], rows)
            + f"\nFirst start (empty cache, bundle verified in full): {first}.\n\n"
            "Steady state, Sessions of each setting interleaved in one process (`arena on`: ONNX Runtime's CPU "
            "memory arena, the runtime's setting before):\n\n"
            + markdown_table(["config", "p50 ms", "p90 ms"], steady)
            + f"\nFresh process after 20 predictions, arena on / off: {arena}.\n\nWhere a fresh process's time "
            f"and memory go (warm cache):\n\n{where}\n")


# Columns of an int8 fidelity report shown where every variant has them (older reports lack the later ones).
_FIDELITY_COLUMNS = (("min_cosine_default_kernels", "min cosine, ONNX Runtime's default kernels", "{:.4f}"),
                     ("min_cosine_as_written", "min cosine as written", "{:.4f}"),
                     ("b1_ms", "b1 ms", "{:.3f}"), ("b8_ms", "b8 ms", "{:.3f}"),
                     ("b1_ms_default_kernels", "b1 ms, default kernels", "{:.3f}"),
                     ("b8_ms_default_kernels", "b8 ms, default kernels", "{:.3f}"))


@register_renderer("mmedge.image_int8_fidelity/1")
def render_image_int8_fidelity(report: Report, source: str) -> str:
    """Each quantization recipe of an encoder: cosines to fp32 (the runtime's kernels, ONNX Runtime's
    default ones and as written, where the report has them) and latency."""
    variants = report["variants"].values()
    extra = [(key, title, fmt) for key, title, fmt in _FIDELITY_COLUMNS if all(key in v for v in variants)]
    rows = [[name, f"{v['min_cosine_64']:.4f}", f"{v['min_cosine']:.4f}", f"{v['mean_cosine']:.4f}",
             *(fmt.format(v[key]) for key, _, fmt in extra)] for name, v in report["variants"].items()]
    cpu, encoder = report.get("cpu"), report.get("encoder", "image")
    kernels = ("the runtime's sessions (exact 8-bit products on every CPU: `mmedge.runtime.int8_kernels`); "
               "\"default kernels\": ONNX Runtime's own u8 x s8 kernels, which saturate on x86 CPUs without VNNI; "
               if any(key == "min_cosine_default_kernels" for key, _, _ in extra) else "")
    where = (f" CPU: {cpu['model']}, {'with' if cpu['vnni'] else 'without'} VNNI. Cosines: {kernels}\"as written\": "
             "the same graph with ONNX Runtime's Q/DQ fusion off (what a CPU with VNNI, or TensorRT, computes; "
             "`docs/quantization_notes.md`)." if cpu else "")
    return (f"## {encoder.capitalize()} encoder int8 fidelity (`{source}`)\n\n`{shlex.join(report['command'])}`: the "
            f"reference {encoder} encoder quantized by each recipe, calibrated on the first 300 training rows (NNCF's "
            f"subset; 1000 where named; ONNX Runtime's peer on all {report['calib_rows']} loaded); pooled "
            f"output's cosine to the fp32 graph on {report['eval_rows']} held-out rows (and on the first 64, as "
            f"`mmedge bench --peers` quotes it); latency interleaved, on a shared machine.{where} {BUNDLE}\n\n"
            + markdown_table(["recipe", "min cosine, 64 rows", f"min cosine, {report['eval_rows']} rows",
                              "mean cosine", *(title for _, title, _ in extra)], rows))


@register_renderer("mmedge.encoder_lanes/1")
def render_encoder_lanes(report: Report, source: str) -> str:
    """Whole ``Session.predict`` calls with the encoders at once and in turn, side by side."""
    rows = [[f"{r['precision']}/{r['backend']}", r["batch"], f"{r['lanes']['p50_ms']:.2f}",
             f"{r['lanes']['p90_ms']:.2f}", f"{r['in_turn']['p50_ms']:.2f}", f"{r['in_turn']['p90_ms']:.2f}",
             f"{r['lanes_over_in_turn']:.3f}×", "yes" if r["disturbed"] else ""] for r in report["rows"]]
    env = report["environment"]
    plans = "; ".join(f"{key}: {ways['lanes']['reason']}" for key, ways in report["plans"].items())
    return (f"## Encoders at once (`{source}`)\n\n`{report['command']}`, {report['created']}, {env['cpu']} "
            f"({env['cpus']} cores, load average {env['load_average'][0]:.1f} at the end), {env['threads']} threads, "
            f"{env['iters']} iterations. Per precision and backend, a default Session (encoders at once: "
            "`mmedge.runtime.encoder_lanes`) and one with `encoder_lanes=1` (in turn, every graph on every thread: "
            "the runtime before lanes) predict the same real test rows, interleaved with each other; text cache "
            f"off, one BLAS thread. {BUNDLE} Plans: {plans}.\n\n"
            + markdown_table(["config", "batch", "at once p50 ms", "p90", "in turn p50 ms", "p90",
                              "at once / in turn", "disturbed (p90/p50 > 1.3)"], rows))
