"""The same device work as a Flower run, in a plain Python loop (no Flower, no Ray).

Used by the cohort benchmark as the reference cost of the devices' own work, and for quick
hyper-parameter sweeps. It drives a strategy's device-level hooks exactly as the Flower base
does (same sampling, same routing into cohorts, same sorted aggregation), so its metrics
match a Flower run with dropouts disabled.
"""

from __future__ import annotations

import time
from typing import Any

from clients.device import EVALUATE, FIT, DeviceReply, DeviceTask, device_rng
from experiments.setup import effective_config, resolve
from fedrec.results import RunRecorder
from strategies.base import route
from strategies.rounds import summarise_eval


def run_devices(logic, kind: str, rnd: int, ids: list[int], broadcast, own, seed: int,
                states: dict, cohort: int) -> list[DeviceReply]:
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


def plain_loop(overrides: dict[str, Any], run_dir: str, verbose: bool = True) -> list[dict[str, Any]]:
    """Run ``num-rounds`` rounds of the configured strategy; returns one record per round."""
    flat = effective_config({}, {**overrides, "simulate-dropouts": False})
    cfg, cls = resolve(flat)
    fed = cls.prepare_data(cfg)
    strategy = cls(cfg=cfg, fed=fed, recorder=RunRecorder(run_dir))
    logic = cls.device_cls(cfg, fed)
    states: dict = {}
    records = []
    for rnd in range(1, cfg.train.num_rounds + 1):
        t0 = time.perf_counter()
        ids = strategy.select_fit_devices(rnd)
        fit = run_devices(logic, FIT, rnd, ids, strategy.fit_broadcast(rnd), strategy.fit_own(rnd, ids),
                          cfg.train.seed, states, cfg.sim.devices_per_client)
        agg = strategy.aggregate(rnd, [r for r in fit if r.status == "ok"])
        t_fit = time.perf_counter() - t0
        rec: dict[str, Any] = {"round": rnd, "fit_s": t_fit, **{f"agg_{k}": v for k, v in agg.items()}}
        every = cfg.sim.eval_every
        if rnd == cfg.train.num_rounds or (every and rnd % every == 0):
            eval_ids = strategy.select_eval_devices(rnd)
            ev = run_devices(logic, EVALUATE, rnd, eval_ids, strategy.eval_broadcast(rnd),
                             strategy.eval_own(rnd, eval_ids), cfg.train.seed, states,
                             cfg.sim.devices_per_client)
            rec.update(summarise_eval(ev))
        rec["round_s"] = time.perf_counter() - t0
        records.append(rec)
        if verbose:
            shown = {k: round(v, 4) for k, v in rec.items() if k.startswith("test_") and "@10" in k}
            print(f"round {rnd}: fit {t_fit:.2f} s, total {rec['round_s']:.2f} s {shown}", flush=True)
    return records
