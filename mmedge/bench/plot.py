"""The latency plot of a bench report (matplotlib, imported only when a plot is asked for)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["plot_latency"]


def plot_latency(report: Mapping[str, Any], path: Path) -> Path:
    """Box plots of the latency samples of every configuration (one panel per batch size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches: Sequence[int] = report["settings"]["batches"]
    old = tuple(int(v) for v in matplotlib.__version__.split(".")[:2]) < (3, 10)
    horizontal: dict[str, Any] = {"vert": False} if old else {"orientation": "horizontal"}
    fig, axes = plt.subplots(len(batches), 1, figsize=(9, 1.2 + 0.45 * len(report["configs"])), squeeze=False)
    for ax, b in zip(axes[:, 0], batches):
        configs = [c for c in report["configs"] if c["batch"] == b]
        ax.boxplot([c["samples_ms"] for c in configs], showfliers=True, **horizontal)
        ax.set_yticks(range(1, len(configs) + 1), [c["id"].rsplit("/b", 1)[0] for c in configs], fontsize=8)
        ax.set_xlabel("end-to-end latency (ms)")
        ax.set_title(f"{report['bundle']['name']}, batch {b}, {report['settings']['threads']} threads", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
