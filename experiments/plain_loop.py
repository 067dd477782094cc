"""The same run as through Flower, in this process (no Flower server, no Ray).

``plain_loop`` drives the strategy with the one round driver (``strategies.driver``) over an
``InProcessTransport``: the same phases, sampling, routing into cohorts, messages,
``DeviceHost`` (state, costs, faults), aggregation, round log, checkpoints and run directory
as a Flower run, so its metrics equal those of a Flower run without dropouts (dropouts are
off here). Used by the benchmarks as the reference cost of the devices' own
work and for quick sweeps.

``run_devices`` runs a list of devices' tasks in cohorts without any strategy: for tests
and experiments that need the raw replies.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.host import DeviceHost, Faults
from experiments.setup import device_profiles, effective_config, resolve
from fedrec.config import RunConfig
from fedrec.devices import DeviceProfile
from fedrec.protocol import FIT, DeviceReply, DeviceTask, device_rng
from fedrec.results import RunRecorder
from strategies.driver import InProcessTransport, run_to_end
from strategies.messages import route


def run_devices(logic, kind: str, rnd: int, ids: list[int], broadcast, own, seed: int,
                states: dict, cohort: int) -> list[DeviceReply]:
    """Every device's reply for one phase, cohort by cohort, private state kept in ``states``."""
    replies: list[DeviceReply] = []
    for _, devs in sorted(route(ids, cohort, 10**9).items()):
        tasks = [DeviceTask(d, rnd, kind, broadcast, own.get(d, {}), states.get(d), {},
                            device_rng(seed, rnd, d, kind)) for d in devs]
        out = logic.run_many(tasks)
        for r in out:
            if kind == FIT and r.state is not None:
                states[r.device_id] = r.state
        replies += out
    return sorted(replies, key=lambda r: r.device_id)


@dataclass
class InProcessRun:
    """A finished in-process run: its config, strategy (round log, state), transport (with
    every exchange when recorded) and the seconds the strategy took to build (cloud start)."""

    cfg: RunConfig
    strategy: Any
    transport: InProcessTransport
    cloud_s: float


def run_in_process(overrides: dict[str, Any], run_dir: str | Path, verbose: bool = False,
                   profile_of: Callable[[int], DeviceProfile] | None = None,
                   record: bool = False) -> InProcessRun:
    """Every round of the configured strategy through the round driver in this process:
    dropouts off, devices on their tiers' profiles (or ``profile_of``), private state in a
    temporary folder removed at the end."""
    flat = effective_config({}, {**overrides, "simulate-dropouts": False, "quiet": not verbose})
    cfg, cls = resolve(flat)
    fed = cls.prepare_data(cfg)
    recorder = RunRecorder(run_dir)
    recorder.start({"flat": flat, "strategy_class": f"{cls.__module__}:{cls.__name__}",
                    "engine": "plain"})
    t0 = time.perf_counter()
    strategy = cls(cfg=cfg, fed=fed, recorder=recorder)
    cloud_s = time.perf_counter() - t0
    if profile_of is None:
        profile_of = device_profiles(fed.n_devices, cfg.sim.device_mix, cfg.train.seed).__getitem__
    root = tempfile.mkdtemp(prefix="fedrec-plain-state-")
    host = DeviceHost(cls.device_cls(cfg, fed), profile_of, cfg.train.seed,
                      dropouts=cfg.sim.simulate_dropouts, state_root=root,
                      faults=Faults(cfg.sim.fault_unavailable, cfg.sim.fault_crash,
                                    cfg.sim.deadline_s))
    transport = InProcessTransport([lambda nd: host.fit(nd, {})[0]] * strategy.expected_clients,
                                   record=record)
    try:
        run_to_end(strategy, 1, cfg.train.num_rounds, transport)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return InProcessRun(cfg, strategy, transport, cloud_s)


def plain_loop(overrides: dict[str, Any], run_dir: str, verbose: bool = True) -> list[dict[str, Any]]:
    """Run ``num-rounds`` rounds of the configured strategy; returns one record per round
    (the run's rounds.jsonl records, with ``fit_s`` and ``round_s`` for the benchmarks)."""
    run = run_in_process(overrides, run_dir, verbose)
    return [{**r, "fit_s": r.get("fit_wall_s", 0.0), "round_s": r["round_wall_s"]}
            for r in run.strategy.log.records]
