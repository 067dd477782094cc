"""PNG plots of the C3DRec experiments (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

METRICS = (("recall@20", "Recall@20 (candidates)"), ("mrr@20", "MRR@20 (candidates)"),
           ("all_recall@20", "Recall@20 (all items)"), ("all_mrr@20", "MRR@20 (all items)"))


def plot_bars(rows: dict[str, Any], path: Path, title: str) -> None:
    """One panel per metric, one bar per approach."""
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 4))
    names = list(rows)
    for ax, (key, label) in zip(axes, METRICS, strict=True):
        vals = [rows[n]["scores"].get(key, 0.0) for n in names]
        ax.barh(range(len(names)), vals, color="tab:blue")
        ax.set_yticks(range(len(names)), names if ax is axes[0] else [""] * len(names), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(label, fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(rows: dict[str, Any], path: Path, title: str) -> None:
    """One panel per metric, one line per mode, x = the swept value."""
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.6))
    modes = sorted({r["mode"] for r in rows.values()})
    for ax, (key, label) in zip(axes, METRICS, strict=True):
        for mode in modes:
            pts = sorted((r["value"], r["scores"].get(key, float("nan")))
                         for r in rows.values() if r["mode"] == mode)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=mode)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(title.removeprefix("accuracy vs "))
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
