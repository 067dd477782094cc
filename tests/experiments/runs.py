"""Helpers the end-to-end launcher tests share: the tiny job, --set lists, round records
without timings, polling, and an undisturbed in-process reference run."""

from __future__ import annotations

import time
from pathlib import Path

from experiments import run as er
from fedrec.results import read_rounds

#: synthetic "tiny": 30 devices, 4 Flower clients of 8 devices
TINY = ["synthetic-size=tiny", "eval-negatives=20", "quiet=true", "devices-per-client=8"]


def sets(*pairs: str) -> list[str]:
    return [a for p in pairs for a in ("--set", p)]


def comparable(run_dir: Path) -> list[dict]:
    """The run's round records without wall-clock fields."""
    timing = lambda k: k.endswith("wall_s") or k in ("elapsed_s", "eta_s")
    return [{k: v for k, v in r.items() if not timing(k)} for r in read_rounds(run_dir)]


def wait_for(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def reference_run(out: Path, rounds: int) -> Path:
    """An undisturbed in-process run of the tiny FedMF job for ``rounds`` rounds."""
    args = ["--engine", "inprocess", *sets(*TINY, f"num-rounds={rounds}", f"output-dir={out}",
                                           "run-name=ref")]
    assert er.main(args) == 0
    return out / "ref"
