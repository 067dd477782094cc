"""A tiny run (synthetic tiny: 30 devices, 60 items) built the way the apps build it, for
the threat-model tests: (cfg, strategy, device logic), one round's replies, captured FitRes."""

from __future__ import annotations

from typing import Any

from experiments.plain_loop import run_devices
from experiments.setup import effective_config, resolve
from fedrec.protocol import DeviceReply
from fedrec.results import RunRecorder

BASE = {"synthetic-size": "tiny", "simulate-dropouts": False, "embedding-dim": 8,
        "eval-negatives": 20, "num-rounds": 2, "quiet": True, "devices-per-client": 8}


def build(tmp_path: Any, **overrides: Any) -> tuple[Any, Any, Any]:
    """(cfg, strategy, device logic) of the configured run, no Flower."""
    flat = effective_config({}, {**BASE, **{k.replace("_", "-"): v for k, v in overrides.items()}})
    cfg, cls = resolve(flat)
    fed = cls.prepare_data(cfg)
    return cfg, cls(cfg=cfg, fed=fed, recorder=RunRecorder(tmp_path)), cls.device_cls(cfg, fed)


def run_round(strategy: Any, logic: Any, rnd: int, kind: str, states: dict) -> list[DeviceReply]:
    """Every selected device's reply for one fit or evaluate round, in cohorts as a host runs them."""
    ids = strategy.select_fit_devices(rnd) if kind == "fit" else strategy.select_eval_devices(rnd)
    bcast = strategy.fit_broadcast(rnd) if kind == "fit" else strategy.eval_broadcast(rnd)
    return run_devices(logic, kind, rnd, ids, bcast, {}, strategy.cfg.train.seed, states,
                       strategy.cfg.sim.devices_per_client)
