"""Benchmark: C3DRec's personalisation round over every ML-1M user, the batched cohort
fine-tuning vs the per-device loop.

    python -m experiments.bench_c3drec_finetune [--modes batched,loop,flower] [--cohort 6040]
        [--loop-subset 0] [--set k=v ...]

Setup: experiments/c3drec_ml1m.toml with every user (max-devices = 0: 6,040 devices) and its
5 local epochs. The cloud's global model and candidate sets are built first (not timed);
then, in this process, with one torch thread (as in a Flower client):

  batched  ``run_many`` (``fedrec.c3drec.personalise``) on every device, in cohorts of
           --cohort devices;
  loop     ``fit``, one device at a time (the per-device reference), on --loop-subset devices
           (every k-th; 0 = all), extrapolated per device to all of them; each reply is
           compared with the batched one: the largest |difference| of the personal parameters
           and of the losses, the share of identical top-K lists and both paths' Recall@20.

  flower   in a subprocess: a Flower simulation of 2 rounds with two clients of
           ceil(devices / 2) devices each, run in parallel on two cores; the fit phase's wall
           time of each round from the round log (round 1 includes starting Ray's workers,
           round 2 starts from the stored deltas).

Times: wall seconds of the fit work (and CPU seconds of this process for the in-process
modes). JSON in --out (default runs/bench_c3drec_finetune.json).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from experiments.bench_cohort import ROOT, measure
from experiments.run import parse_sets, read_run_config

CONFIG = ROOT / "experiments" / "c3drec_ml1m.toml"
RUN_DIR = ROOT / "runs" / "bench"


def flat_config(sets: dict[str, Any], name: str) -> dict[str, Any]:
    return {**read_run_config(CONFIG), "max-devices": 0, "quiet": True,
            "output-dir": str(RUN_DIR), "run-name": name, **sets}


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Result, wall seconds and CPU seconds of this process."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def in_process(modes: list[str], cohort: int, subset: int, sets: dict[str, Any]) -> dict:
    """The batched and loop modes on one cloud model (module docstring)."""
    import torch

    from experiments.setup import effective_config, resolve
    from fedrec.protocol import FIT, DeviceTask, device_rng
    from fedrec.results import RunRecorder

    torch.set_num_threads(1)
    cfg, cls = resolve(effective_config({}, flat_config(sets, "bench-c3drec-finetune")))
    fed = cls.prepare_data(cfg)
    (strategy, cloud_s, _) = timed(lambda: cls(cfg=cfg, fed=fed,
                                              recorder=RunRecorder(RUN_DIR / "bench-c3drec")))
    logic = cls.device_cls(cfg, fed)
    n = fed.n_devices
    print(f"{n} devices, {fed.n_items} items; cloud model in {cloud_s:.0f} s", flush=True)

    def tasks(ids: list[int]) -> list[DeviceTask]:
        own = strategy.fit_own(1, ids)
        return [DeviceTask(d, 1, FIT, strategy.fit_broadcast(1), own.get(d, {}), None, {},
                           device_rng(cfg.train.seed, 1, d, FIT)) for d in ids]

    res: dict[str, Any] = {"devices": n, "cloud_s": cloud_s, "cohort": cohort}
    batched: dict[int, Any] = {}
    if "batched" in modes or "loop" in modes:
        wall = cpu = 0.0
        for lo in range(0, n, cohort):
            out, w, c = timed(lambda lo=lo: logic.run_many(tasks(list(range(lo, min(lo + cohort, n))))))
            batched.update({r.device_id: r for r in out})
            wall, cpu = wall + w, cpu + c
        res["batched"] = {"fit_s": wall, "cpu_s": cpu, "ms_per_device": 1e3 * wall / n}
        print(json.dumps({"batched": res["batched"]}), flush=True)
    if "loop" in modes:
        step = max(1, n // subset) if subset else 1
        ids = list(range(0, n, step))[:subset or n]
        res["loop"] = loop_vs_batched(logic, strategy, tasks, ids, batched, cfg.train.seed)
        res["loop"]["extrapolated_fit_s"] = res["loop"]["fit_s"] / len(ids) * n
        res["speedup_batched_vs_loop"] = res["loop"]["extrapolated_fit_s"] / res["batched"]["fit_s"]
        print(json.dumps({"loop": res["loop"]}), flush=True)
    return res


def loop_vs_batched(logic: Any, strategy: Any, tasks: Callable, ids: list[int],
                    batched: dict[int, Any], seed: int) -> dict[str, Any]:
    """Time ``fit`` on ``ids`` and compare every reply with the batched one."""
    from clients.c3drec_device import TOPK, TOPK_ALL
    from fedrec.c3drec.pipeline import apply_state
    from fedrec.c3drec.train import next_click_events, rank_metrics_topk

    arrays = logic.global_model(strategy.fit_broadcast(1))[0]
    wall = cpu = 0.0
    worst = {"param": 0.0, "loss_rel": 0.0}
    over, entries, same, lists = 0, 0, {TOPK: 0, TOPK_ALL: 0}, 0
    hits = {"loop": 0.0, "batched": 0.0}
    for task in tasks(ids):
        ref, w, c = timed(lambda t=task: logic.fit(t))
        wall, cpu = wall + w, cpu + c
        got = batched[task.device_id]
        a, b = apply_state(arrays, ref.state), apply_state(arrays, got.state)
        for name in a:
            diff = np.abs(a[name] - b[name])
            worst["param"] = max(worst["param"], float(diff.max()))
            over, entries = over + int((diff > 1e-5).sum()), entries + diff.size
        if "loss" in ref.metrics:
            rel = abs(ref.metrics["loss"] - got.metrics["loss"]) / abs(ref.metrics["loss"])
            worst["loss_rel"] = max(worst["loss_rel"], rel)
        _, targets = next_click_events(logic.fed.device(task.device_id).test, 1)
        lists += len(targets)
        for key in same:
            if key in ref.state:
                same[key] += int((ref.state[key] == got.state[key]).all(axis=1).sum())
        key = TOPK if TOPK in ref.state else TOPK_ALL
        for name, r in (("loop", ref), ("batched", got)):
            hits[name] += float(rank_metrics_topk(r.state[key].astype(np.int64), targets,
                                                  20)["hit"].sum())
    return {"devices": len(ids), "fit_s": wall, "cpu_s": cpu,
            "ms_per_device": 1e3 * wall / len(ids), "max_abs_param_diff": worst["param"],
            "share_param_entries_over_1e-5": over / max(entries, 1),
            "max_rel_loss_diff": worst["loss_rel"],
            "identical_topk_lists": {k: v / max(lists, 1) for k, v in same.items()},
            "recall@20_loop": hits["loop"] / max(lists, 1),
            "recall@20_batched": hits["batched"] / max(lists, 1)}


def flower_child(sets: dict[str, Any]) -> None:
    """Runs inside the subprocess; prints one JSON line."""
    import torch
    from flwr.client import ClientApp
    from flwr.simulation import run_simulation

    from experiments.client_app import make_client_fn
    from experiments.server_app import make_server_app
    from experiments.setup import effective_config, resolve
    from fedrec.results import read_rounds

    torch.set_num_threads(1)
    flat = flat_config({"num-rounds": 2, **sets}, "bench-c3drec-finetune-flower")
    cfg, cls = resolve(effective_config({}, flat))
    n = cls.prepare_data(cfg).n_devices
    flat["devices-per-client"] = math.ceil(n / 2)
    run_simulation(server_app=make_server_app(flat),
                   client_app=ClientApp(client_fn=make_client_fn(flat)), num_supernodes=2,
                   backend_config={"client_resources": {"num_cpus": 1}})
    rounds = read_rounds(RUN_DIR / "bench-c3drec-finetune-flower")
    print(json.dumps({"devices": n, "clients": 2, "fit_s": [r["fit_wall_s"] for r in rounds],
                      "test_recall@20": rounds[-1].get("test_recall@20")}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="batched,loop,flower")
    ap.add_argument("--cohort", type=int, default=6040, help="devices per run_many call")
    ap.add_argument("--loop-subset", type=int, default=600, help="devices the loop runs (0: all)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_c3drec_finetune.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    sets = parse_sets(a.set)
    if a.child:
        flower_child(sets)
        return
    modes = a.modes.split(",")
    res = in_process(modes, a.cohort, a.loop_subset, sets) if {"batched", "loop"} & set(modes) \
        else {}
    if "flower" in modes:
        print("running flower ...", flush=True)
        out, peak = measure([sys.executable, "-m", "experiments.bench_c3drec_finetune",
                             "--child", *[x for s in a.set for x in ("--set", s)]])
        res["flower"] = {**out, "peak_pss_mb": peak.pss_bytes / 2**20}
        print(json.dumps({"flower": res["flower"]}), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
