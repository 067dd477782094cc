"""Helpers the end-to-end launcher tests share: the tiny job, --set lists, round records
without timings, polling, and an undisturbed in-process reference run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from experiments import procs
from experiments import run as er
from experiments.flower_engine import REPO
from fedrec.results import read_rounds, read_summary

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


def kill_9_after(args: list[str], run_dir: Path, rounds: int, timeout_s: float,
                 before_kill: Callable[[set[int]], None] = lambda started: None,
                 env: dict[str, str] | None = None) -> None:
    """``python -m experiments.run ARGS`` in a subprocess (output in ``launcher.log`` beside
    ``run_dir``), ``kill -9`` once ``rounds`` rounds are recorded; returns when every process
    it had started has stopped and the summary no longer says "running". ``before_kill``
    sees the launcher's descendants just before the kill."""
    cmd = [sys.executable, "-m", "experiments.run", *args]
    with (run_dir.parent / "launcher.log").open("w") as log:
        launcher = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    done = run_dir / "rounds.jsonl"
    wait_for(lambda: done.is_file() and len(done.read_text().splitlines()) >= rounds, timeout_s,
             f"{rounds} finished round(s)")
    started = procs.descendants(launcher.pid)
    before_kill(started)
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    wait_for(lambda: not any(procs.alive(p) for p in started), 60, "the Flower stack to stop")
    wait_for(lambda: read_summary(run_dir)["status"] != "running", 30, "the summary to change")
