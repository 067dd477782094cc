"""A run directory's life as the launcher sees it: claimed atomically, described by
``launch.json``, resumed from its checkpoint with the config it was started with.

``python -m experiments.run --resume DIR`` continues a run that was interrupted (Ctrl-C,
SIGTERM, ``kill -9`` of the launcher, a dead simulation worker) after its last finished
round: the cloud's state comes from ``DIR/checkpoint.pkl`` (strategies.base.state_dict), each
device's private state from the version of its shard written in that round
(clients.state), and every random draw is a function of (seed, round, device), so the
resumed run ends with the metrics an uninterrupted one would have.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments import procs
from experiments.setup import effective_config
from fedrec.errors import ConfigError
from fedrec.results import atomic_write, read_summary_if_any

LAUNCH = "launch.json"
#: keys that may differ between the first launch and a resume
NOT_CONFIG = frozenset({"resume", "output-dir", "run-name"})


def claim_run_dir(output_dir: Path, name: str, auto: bool) -> Path:
    """Create ``output_dir/name`` atomically (``mkdir`` fails if it exists, so two runs
    started at once never share a folder). An automatic name gets ``-2``, ``-3``... instead."""
    output_dir.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        path = output_dir / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            if not auto:
                break
    raise ConfigError(f"run directory {output_dir / name} already exists; pass another run-name "
                      "(or none, to get a fresh one), or --resume it")


def write_launch(run_dir: Path, overrides: Mapping[str, Any], n_devices: int, n_clients: int,
                 engine: str = "flwr") -> None:
    atomic_write(run_dir / LAUNCH, json.dumps(
        {"overrides": dict(overrides), "n_devices": n_devices, "n_clients": n_clients,
         "engine": engine}, indent=2, sort_keys=True))


def resume_engine(run_dir: Path, asked: str | None, n_clients: int, asked_clients: int) -> str:
    """The engine a resume runs on: the one the run started on unless another is asked for.

    The simulation engines keep device state in one folder, the deployment engine on each
    SuperNode (node ``partition-id`` i hosts the i-th block of shards): moving between them,
    or changing the number of SuperNodes, would leave devices without their state, so it is
    refused."""
    started = str(read_launch(run_dir).get("engine", "flwr"))
    engine = asked or started
    if (engine == "deployment") != (started == "deployment"):
        raise ConfigError(f"run {run_dir} started on the {started} engine, which keeps its "
                          f"devices' state elsewhere; resume it with --engine {started}")
    if engine == "deployment" and asked_clients and asked_clients != n_clients:
        raise ConfigError(f"run {run_dir} ran on {n_clients} SuperNodes, each holding its "
                          f"devices' state; resume it with --num-supernodes {n_clients}")
    return engine


def read_launch(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / LAUNCH).read_text())
    except (OSError, ValueError):
        raise ConfigError(f"{run_dir} is not a run directory started by experiments.run (no "
                          f"readable {LAUNCH}); pass the folder printed after 'run dir:'") from None


def check_resumable(run_dir: Path, summary: Mapping[str, Any]) -> None:
    status = summary.get("status")
    if status == "running" and summary.get("host") == socket.gethostname() \
            and summary.get("pid") and procs.alive(int(summary["pid"])) \
            and int(summary["pid"]) != os.getpid():
        raise ConfigError(f"run {run_dir} is still running (pid {summary['pid']}); "
                          "wait for it or stop it before resuming")
    if status == "failed" and not summary.get("restartable"):
        raise ConfigError(f"run {run_dir} failed ({summary.get('error', 'see summary.json')}); "
                          "a failed run is not resumed: fix the cause and start a new run")


def changed_keys(started: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """Config keys whose value ``given`` would change (defaults filled on both sides)."""
    before = effective_config({}, started)
    return sorted(k for k, v in given.items() if k not in NOT_CONFIG and before.get(k) != v)


def plan_resume(run_dir: Path, given: Mapping[str, Any]) -> tuple[dict[str, Any], int, int] | None:
    """(overrides, devices, Flower clients) that continue ``run_dir``; None when it finished.

    ``given`` are the --run-config/--set values of the resume command: a resumed run keeps
    the config it was started with, so any value that differs is refused.
    """
    run_dir = run_dir.resolve()
    launch = read_launch(run_dir)
    summary = read_summary_if_any(run_dir)   # none: killed before it began, resume round 0
    if summary.get("status") == "finished":
        return None
    check_resumable(run_dir, summary)
    started = launch["overrides"]
    changed = changed_keys(started, given)
    if changed:
        k = changed[0]
        raise ConfigError(f"--resume keeps the config the run was started with: {k} was "
                          f"{effective_config({}, started).get(k)!r}, not {given[k]!r}; "
                          "start a new run to change it")
    overrides = {**started, "output-dir": str(run_dir.parent), "run-name": run_dir.name,
                 "resume": True}
    return overrides, int(launch["n_devices"]), int(launch["n_clients"])
