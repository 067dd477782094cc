"""A run directory: what a run was asked to do and everything it measured.

Layout of ``<output-dir>/<run-name>/``::

    config.json     resolved run config (flat keys as given + parsed sections)
    rounds.jsonl    one JSON object per finished round (rewritten atomically each round,
                    so a killed run keeps every round it finished)
    devices.csv     per-device cost summary (bytes, simulated time, energy, participation)
    summary.json    status ("running" | "finished" | "failed"), final metrics, timings
    device_state/   private on-device state (not results; deleted at the end unless kept)
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file + rename: never half-written."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


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
    def state_dir(self) -> Path:
        return self.dir / "device_state"

    def start(self, config: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / "config.json", json.dumps(_clean(config), indent=2, sort_keys=True))
        self.write_summary({"status": "running"})

    def log_round(self, record: dict[str, Any]) -> None:
        self.rounds.append(_clean(record))
        atomic_write(self.dir / "rounds.jsonl", "".join(dumps(r) + "\n" for r in self.rounds))

    def write_devices(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.dir / "devices.csv", buf.getvalue())

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write(self.dir / "summary.json", json.dumps(_clean(summary), indent=2, sort_keys=True))


def read_rounds(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "rounds.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "summary.json").read_text())
