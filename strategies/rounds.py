"""Per-round bookkeeping shared by every strategy: counts, costs, metrics, progress, summary.

Pure Python over DeviceReply lists; no Flower objects.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np

from fedrec.protocol import DeviceReply


def mean_metrics(replies: list[DeviceReply]) -> dict[str, float]:
    """Per-key mean over the ok replies that report the key (macro average over devices)."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for r in replies:
        if r.status != "ok":
            continue
        for k, v in r.metrics.items():
            if v is not None and np.isfinite(v):
                sums[k] += float(v)
                counts[k] += 1
    return {k: sums[k] / counts[k] for k in sorted(sums)}


def summarise_eval(replies: list[DeviceReply]) -> dict[str, float]:
    out = mean_metrics(replies)
    out["eval_devices"] = float(sum(r.status == "ok" for r in replies))
    out["eval_failed"] = float(sum(r.status == "failed" for r in replies))
    return out


def fit_costs(replies: list[DeviceReply]) -> dict[str, float]:
    """Round totals; simulated round latency = the slowest device (devices run in parallel)."""
    ok = [r for r in replies if r.status == "ok"]
    cost = lambda k: [r.costs.get(k, 0.0) for r in ok]
    latency = [r.costs.get("compute_s", 0.0) + r.costs.get("transfer_s", 0.0) for r in ok]
    return {
        "devices_ok": float(len(ok)),
        "devices_dropped": float(sum(r.status == "dropped" for r in replies)),
        "devices_failed": float(sum(r.status == "failed" for r in replies)),
        "devices_late": float(sum(r.status == "late" for r in replies)),
        "bytes_up": float(sum(cost("bytes_up"))),
        "bytes_down": float(sum(cost("bytes_down"))),
        "device_compute_s": float(sum(cost("compute_s"))),
        "sim_round_s": float(max(latency, default=0.0)),
        "energy_j": float(sum(cost("energy_j"))),
        "peak_mem_bytes": float(max(cost("peak_mem_bytes"), default=0.0)),
        "train_loss": mean_metrics(ok).get("loss", float("nan")),
    }


class RoundLog:
    """Collects one record per round and the run summary; times wall clock from creation."""

    def __init__(self, num_rounds: int) -> None:
        self.num_rounds = num_rounds
        self.t0 = time.monotonic()
        self.records: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._cur: dict[str, Any] = {}

    def begin(self, rnd: int, selected: int) -> None:
        self._cur = {"round": rnd, "devices_selected": selected, "t_start": time.monotonic()}

    def selected(self, n: int) -> None:
        self._cur["devices_selected"] = n

    def update(self, values: dict[str, Any]) -> None:
        self._cur.update(values)

    def phase_done(self, name: str, replies: list[DeviceReply], metrics: dict[str, float]) -> None:
        """A device phase other than fit/evaluate: its counts and costs under ``<name>_``."""
        costs = fit_costs(replies)
        costs.pop("train_loss", None)
        self._cur.update({f"{name}_{k}": v for k, v in costs.items()})
        self._cur.update({f"{name}_{k}": v for k, v in metrics.items()})
        failed = [f"device {r.device_id}: {r.error}" for r in replies if r.status == "failed"]
        self.errors = (self.errors + failed)[:100]

    def fit_done(self, replies: list[DeviceReply], metrics: dict[str, float]) -> None:
        self._cur["fit_wall_s"] = time.monotonic() - self._cur.get("t_start", time.monotonic())
        self._cur.update(fit_costs(replies))
        self._cur.update({f"agg_{k}": v for k, v in metrics.items()})
        failed = [f"device {r.device_id}: {r.error}" for r in replies if r.status == "failed"]
        self.errors = (self.errors + failed)[:100]   # the summary shows the first five

    def eval_done(self, metrics: dict[str, float]) -> None:
        self._cur.update(metrics)

    def end(self, rnd: int) -> dict[str, Any]:
        rec = dict(self._cur)
        now = time.monotonic()
        rec["round_wall_s"] = now - rec.pop("t_start", now)
        rec["elapsed_s"] = now - self.t0
        rec["eta_s"] = rec["elapsed_s"] / rnd * (self.num_rounds - rnd)
        self.records.append(rec)
        return rec

    def summary(self, select_metric: str) -> dict[str, Any]:
        evals = [r for r in self.records if any(k.startswith("test_") for k in r)]
        ranked = [r for r in evals if select_metric in r]
        best = max(ranked, key=lambda r: r[select_metric], default=None)
        final = evals[-1] if evals else {}
        test_keys = lambda r: {k: v for k, v in r.items() if k.startswith(("test_", "valid_"))}
        return {
            "status": "finished",
            "rounds": len(self.records),
            "wall_s": time.monotonic() - self.t0,
            "final": test_keys(final),
            "best_round": best["round"] if best else None,
            "best": test_keys(best) if best else {},
            "select_metric": select_metric,
            "bytes_up": sum(r.get("bytes_up", 0.0) for r in self.records),
            "bytes_down": sum(r.get("bytes_down", 0.0) for r in self.records),
            "device_failures": sum(r.get("devices_failed", 0.0) for r in self.records),
            "device_dropouts": sum(r.get("devices_dropped", 0.0) for r in self.records),
            "device_stragglers": sum(r.get("devices_late", 0.0) for r in self.records),
            "first_errors": self.errors[:5],
        }


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def progress_line(rec: dict[str, Any], num_rounds: int) -> str:
    """One line per round: round, metrics, bytes, simulated device time, elapsed, ETA."""
    shown = [k for k in ("test_hr@10", "test_ndcg@10", "test_recall@20", "test_mrr@20",
                         "test_gauc", "test_cloud_gauc", "test_ctr@k") if k in rec]
    mets = " ".join(f"{k.removeprefix('test_')} {rec[k]:.4f}" for k in shown)
    loss = rec.get("train_loss")
    late = f" {int(rec['devices_late'])} late" if rec.get("devices_late") else ""
    return (
        f"round {rec['round']}/{num_rounds} | loss {loss:.4f} | {mets or 'no eval'} | "
        f"devices {int(rec.get('devices_ok', 0))} ok {int(rec.get('devices_dropped', 0))} dropped "
        f"{int(rec.get('devices_failed', 0))} failed{late} | up {_fmt_bytes(rec.get('bytes_up', 0))} "
        f"down {_fmt_bytes(rec.get('bytes_down', 0))} | sim {rec.get('sim_round_s', 0):.2f} s | "
        f"wall {rec['round_wall_s']:.1f} s | elapsed {rec['elapsed_s']:.0f} s | ETA {rec['eta_s']:.0f} s"
    )
