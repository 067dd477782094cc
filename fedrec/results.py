"""A run directory: what a run was asked to do and everything it measured.

Layout of ``<output-dir>/<run-name>/``::

    config.json     resolved run config (flat keys as given + parsed sections)
    rounds.jsonl    one JSON object per finished round (rewritten atomically each round,
                    so a killed run keeps every round it finished)
    devices.csv     per-device cost summary (bytes, simulated time, energy, participation)
    summary.json    status ("running" | "finished" | "failed" | "interrupted"), final
                    metrics, timings; a "running" summary names the launcher's pid and host
    checkpoint.pkl  the cloud's state after the last finished round (rewritten atomically
                    each round): what ``python -m experiments.run --resume DIR`` continues
    model.npz       the final global model (the strategy's global arrays)
    run_id          the run's opaque id: each device host keeps its devices' private state
                    under <its state root>/<run id>/ (clients.state), never in this folder
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
import socket
import uuid
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write(path: Path, text: str | bytes) -> None:
    """Write ``text`` to ``path`` via a temporary file + rename: never half-written."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        if isinstance(text, bytes):
            tmp.write_bytes(text)
        else:
            tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become None, numpy scalars become Python scalars."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(obj: Any) -> str:
    return json.dumps(_clean(obj), sort_keys=True)


class RunRecorder:
    """Writes a run directory incrementally. Pure file I/O, no Flower."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.rounds: list[dict[str, Any]] = []

    @property
    def run_id(self) -> str:
        """The run's opaque id (devices key their private state by it): made when the run
        starts, read back when it resumes."""
        path = self.dir / "run_id"
        if path.is_file():
            return path.read_text().strip()
        rid = f"{self.dir.name[:60]}-{uuid.uuid4().hex[:12]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(path, rid)
        return rid

    def start(self, config: dict[str, Any], resume_round: int = 0) -> None:
        """Begin (or, after ``resume_round`` finished rounds, continue) the run directory."""
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / "config.json", json.dumps(_clean(config), indent=2, sort_keys=True))
        if resume_round:
            self.rounds = read_rounds(self.dir)[:resume_round]  # drop the round in flight
            atomic_write(self.dir / "rounds.jsonl", "".join(dumps(r) + "\n" for r in self.rounds))
        self.write_summary({"status": "running", "pid": os.getpid(), "host": socket.gethostname(),
                            "rounds_completed": resume_round})

    def log_round(self, record: dict[str, Any]) -> None:
        self.rounds.append(_clean(record))
        atomic_write(self.dir / "rounds.jsonl", "".join(dumps(r) + "\n" for r in self.rounds))

    def write_devices(self, rows: list[dict[str, Any]]) -> None:
        """One row per device; columns are the union of every row's keys (a device that
        never trained, failed or dropped lacks some), missing values written as 0."""
        if not rows:
            return
        keys = sorted({k for r in rows for k in r} - {"device_id"})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["device_id", *keys], restval=0)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.dir / "devices.csv", buf.getvalue())

    def save_checkpoint(self, rnd: int, state: dict[str, Any]) -> None:
        """The cloud's state after round ``rnd`` (atomic: a kill leaves the previous one)."""
        blob = pickle.dumps({"round": rnd, "state": state}, protocol=pickle.HIGHEST_PROTOCOL)
        atomic_write(self.dir / "checkpoint.pkl", blob)

    def load_checkpoint(self) -> tuple[int, dict[str, Any]] | None:
        path = self.dir / "checkpoint.pkl"
        if not path.is_file():
            return None
        with path.open("rb") as fh:
            ckpt = pickle.load(fh)
        return int(ckpt["round"]), ckpt["state"]

    def write_model(self, arrays: dict[str, Any]) -> None:
        """The final global model as ``model.npz`` (numpy arrays by name)."""
        buf = io.BytesIO()
        # numpy's stub types **kwds as if one could be allow_pickle (a bool)
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
        atomic_write(self.dir / "model.npz", buf.getvalue())

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_summary(self.dir, summary)


def write_summary(run_dir: str | Path, summary: dict[str, Any]) -> None:
    atomic_write(Path(run_dir) / "summary.json", json.dumps(_clean(summary), indent=2, sort_keys=True))


def read_summary_if_any(run_dir: str | Path) -> dict[str, Any]:
    """The summary, or {} when there is none yet (killed before the ServerApp wrote one) or it
    cannot be read."""
    try:
        return dict(json.loads((Path(run_dir) / "summary.json").read_text()))
    except (OSError, ValueError):
        return {}


def resume_command(run_dir: str | Path) -> str:
    return f"python -m experiments.run --resume {run_dir}"


def mark_interrupted(run_dir: str | Path, reason: str) -> bool:
    """Turn a summary still saying "running" into "interrupted" (resumable); False when the
    run had already ended (its summary says so) or never started."""
    if read_summary_if_any(run_dir).get("status") != "running":
        return False
    rounds = Path(run_dir) / "rounds.jsonl"
    done = len(rounds.read_text().splitlines()) if rounds.is_file() else 0
    write_summary(run_dir, {"status": "interrupted", "error": reason, "restartable": True,
                            "rounds_completed": done, "resume": resume_command(run_dir)})
    return True


def mark_failed(run_dir: str | Path, reason: str) -> None:
    """A run that failed before its ServerApp wrote anything (e.g. the SuperNodes never came
    up): summary "failed" with the one-line reason, unless a summary already says more."""
    if read_summary_if_any(run_dir).get("status") in (None, "running"):
        write_summary(run_dir, {"status": "failed", "error": reason, "restartable": False,
                                "rounds_completed": 0})


def record_memory(run_dir: str | Path, peak: dict[str, Any]) -> None:
    """Add the launcher's whole-process-tree memory peak (fedrec.memory) to summary.json."""
    summary = read_summary_if_any(run_dir)
    if summary:
        write_summary(run_dir, {**summary, "memory_peak_tree": peak})


def read_rounds(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "rounds.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "summary.json").read_text())
