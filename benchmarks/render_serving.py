"""RESULTS.md section for where dynamic batching's p99 comes from (``benchmarks/serve_batching_tail.py``).
Imported by ``make_results.py``, which registers it with ``render.py``.
"""
from __future__ import annotations

from typing import Any, Mapping

from render import markdown_table, register_renderer

Report = Mapping[str, Any]


@register_renderer("mmedge.serve_batching_tail/1")
def render_batching_tail(report: Report, source: str) -> str:
    """One server per setting, runs in a row: p50/p99, rows per execution, and the slowest request's
    round trip next to the runtime's own time for it (a stall outside ``Session.predict`` shows as a gap)."""
    rows = [["on" if r["batching"] else "off", r["run"], r["requests"], f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
             f"{r['rows_per_execution']:.2f}", f"{r['triton_queue_ms']:.1f}", f"{r['predict_p99_ms']:.1f}",
             f"{max(s[1] for s in r['slowest']):.1f} ({max(r['slowest'], key=lambda s: s[1])[2]:.1f})"]
            for r in report["runs"]]
    load = report.get("load_average") or [float("nan")]
    return "\n".join([
        f"## Where dynamic batching's p99 comes from ({source})\n",
        f"```bash\n{report['command']}\n```\n",
        f"{report['cpu_count']} cores shared with other sessions' work (load average {load[0]:.1f}), "
        f"{report['created_utc']}, {report['busy']} extra busy processes. One `mmedge serve` per setting, "
        "runs of 320 single-row requests from 8 closed-loop clients in a row on the same server. A fresh "
        "server's first batched run holds one stall of about 0.5 s outside `Session.predict` that hits a "
        "whole batch (slowest round trip vs the runtime's own time for it); later runs have none. "
        "`serve_load.json`'s batching p99 is that first run's stall; docs/serving.md explains it.\n",
        markdown_table(["batching", "run", "requests", "p50 ms", "p99 ms", "rows / execution", "Triton queue ms",
                        "predict p99 ms", "slowest round trip ms (its predict ms)"], rows)])
