"""PNG figures of the DCCL experiments (matplotlib, no display) and Fig. 4's grouping."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def activity_groups(events: np.ndarray, n_groups: int = 20) -> np.ndarray:
    """Group of each user (0 = most active): users sorted by training events, descending
    (ties by device id), cut into ``n_groups`` groups of equal size (Fig. 4). -> int [U]"""
    order = np.lexsort((np.arange(len(events)), -np.asarray(events)))
    group = np.empty(len(events), np.int64)
    group[order] = np.arange(len(events)) * n_groups // max(len(events), 1)
    return group


def group_auc(devices_csv: Path, n_groups: int = 20) -> dict[str, list[float]]:
    """Macro-AUC per activity group of f before the round (``f_test_auc``), DCCL-e
    (``e_test_auc``) and DCCL-m (``test_auc``) from a run's ``dccl_devices.csv``."""
    with open(devices_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("test_auc")]
    events = np.array([float(r["train_events"]) for r in rows])
    group = activity_groups(events, n_groups)
    out: dict[str, list[float]] = {"events_mean": [float(events[group == g].mean())
                                                   for g in range(n_groups)]}
    for key in ("f_test_auc", "e_test_auc", "test_auc"):
        vals = np.array([float(r[key]) for r in rows])
        out[key] = [float(vals[group == g].mean()) for g in range(n_groups)]
    return out


def device_metric(devices_csv: Path, key: str) -> dict[int, float]:
    """Device id -> ``key`` (e.g. ``test_hr@10``) from a run's ``dccl_devices.csv``."""
    with open(devices_csv, newline="") as fh:
        return {int(r["device_id"]): float(r[key]) for r in csv.DictReader(fh) if r.get(key)}


def paired_delta(a: dict[int, float], b: dict[int, float]) -> dict[str, float]:
    """Mean of a - b over the users both score, with the half-width of its normal 95%
    interval (paired: the same users and test events, so only the models differ)."""
    users = sorted(set(a) & set(b))
    d = np.array([a[u] - b[u] for u in users])
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"delta": float(d.mean()) if len(d) else float("nan"), "ci95": float(half),
            "users": float(len(d))}


def plot_groups(groups: dict[str, list[float]], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = np.arange(1, len(groups["test_auc"]) + 1)
    for key, label in (("f_test_auc", "f pre-trained (DIN on the first half)"), ("e_test_auc", "DCCL-e"),
                       ("test_auc", "DCCL-m")):
        ax.plot(x, groups[key], marker="o", ms=3, label=label)
    ax.set_xlabel("user group (1 = most active ... 20 = long tail)")
    ax.set_ylabel("macro-AUC (test event vs its negatives)")
    ax.set_xticks(x)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rounds(rows: dict[str, Any], path: Path, title: str, metric: str = "ndcg@10") -> None:
    """One line per setting: the metric of DCCL-m after each round, placed at the share of
    the DCCL half seen by then (settings with more rounds have shorter intervals)."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, row in rows.items():
        n = len(row["rounds"])
        pts = [(r["round"] / n, r.get(metric, float("nan"))) for r in row["rounds"]]
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("share of the DCCL half seen (round / rounds)")
    ax.set_ylabel(f"{metric.upper()} (%) of DCCL-m")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(rows: dict[str, Any], path: Path, title: str, metric: str = "ndcg@10") -> None:
    """DCCL-m and DCCL-e against a swept value (x: the row names' values)."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    names = list(rows)
    x = np.arange(len(names))
    ax.plot(x, [100 * rows[n].get(metric, np.nan) for n in names], marker="o", label="DCCL-m")
    ax.plot(x, [100 * rows[n]["e"].get(metric, np.nan) for n in names], marker="s", label="DCCL-e")
    ax.plot(x, [100 * rows[n]["f"].get(metric, np.nan) for n in names], ls="--", label="f (pre-trained)")
    ax.set_xticks(x, [n.split("=", 1)[1] for n in names])
    ax.set_xlabel(names[0].split("=", 1)[0] if names else "")
    ax.set_ylabel(f"{metric.upper()} (%)")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
