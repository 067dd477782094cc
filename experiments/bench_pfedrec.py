"""PFedRec device work on ML-1M: per-device loop vs vectorised cohort (no Flower).

    python -m experiments.bench_pfedrec [--subset 600] [--cohort 256]

Times one round of local training (fit) and of evaluation for the devices of a subset
(every k-th device) with the per-device torch loop and with ``run_many`` in cohorts, checks
that both give the same uploads, then times the vectorised fit over all devices. One torch
thread (as in a Flower client). Prints per-device CPU milliseconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from experiments.setup import effective_config, resolve
from fedrec.protocol import EVALUATE, FIT, DeviceTask, device_rng
from fedrec.results import RunRecorder


def tasks(kind: str, ids: list[int], broadcast, states: dict) -> list[DeviceTask]:
    return [DeviceTask(d, 1, kind, broadcast, {}, states.get(d), {}, device_rng(0, 1, d, kind))
            for d in ids]


def cohorts(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def timed(fn) -> tuple[list, float]:
    """Result and CPU seconds of this process (wall time is unreliable on a shared machine)."""
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subset", type=int, default=600, help="devices timed with the loop")
    ap.add_argument("--cohort", type=int, default=256, help="devices per run_many call")
    ap.add_argument("--dataset", default="ml-1m")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg, cls = resolve(effective_config({}, {"strategy": "pfedrec", "dataset": args.dataset}))
    (fed, load_s) = timed(lambda: cls.prepare_data(cfg))
    strategy = cls(cfg=cfg, fed=fed, recorder=RunRecorder("/tmp/bench_pfedrec"))
    dev = cls.device_cls(cfg, fed)
    g = strategy.fit_broadcast(1)
    print(f"{args.dataset}: {fed.n_devices} devices, {fed.n_items} items, loaded in "
          f"{load_s:.1f} s; lr {cfg.train.lr}, item lr {dev.item_lr:.1f}; times are CPU time")
    step = max(1, fed.n_devices // args.subset)
    sub = list(range(0, fed.n_devices, step))[: args.subset]
    loop, t_loop = timed(lambda: [dev.fit(t) for t in tasks(FIT, sub, g, {})])
    vec, t_vec = timed(lambda: [r for c in cohorts(sub, args.cohort)
                                for r in dev.run_many(tasks(FIT, c, g, {}))])
    diff = max(float(np.abs(a.upload[k] - b.upload[k]).max())
               for a, b in zip(loop, vec, strict=True) for k in a.upload)
    scale = max(float(np.abs(a.upload["item_emb.weight.val"]).max()) for a in loop)
    n = len(sub)
    print(f"fit, {n} devices: loop {1e3 * t_loop / n:.2f} ms/device, vectorised "
          f"{1e3 * t_vec / n:.3f} ms/device (x{t_loop / t_vec:.1f}); max |upload diff| {diff:.2e} "
          f"(largest |upload| {scale:.2e})")
    states = {r.device_id: r.state for r in vec}
    ev = tasks(EVALUATE, sub, strategy.eval_broadcast(1), states)
    el, t_el = timed(lambda: [dev.evaluate(t) for t in ev])
    ev_vec, t_ev = timed(lambda: [r for c in cohorts(list(range(n)), args.cohort)
                                  for r in dev.run_many([ev[i] for i in c])])
    same = all(a.metrics == b.metrics for a, b in zip(el, ev_vec, strict=True))
    print(f"evaluate, {n} devices: loop {1e3 * t_el / n:.2f} ms/device, vectorised "
          f"{1e3 * t_ev / n:.3f} ms/device; same metrics: {same}")
    everyone = list(range(fed.n_devices))
    _, t_all = timed(lambda: [dev.run_many(tasks(FIT, c, g, {}))
                              for c in cohorts(everyone, args.cohort)])
    print(f"fit, all {fed.n_devices} devices vectorised: {t_all:.1f} s "
          f"({1e3 * t_all / fed.n_devices:.3f} ms/device); loop extrapolated "
          f"{t_loop / n * fed.n_devices:.0f} s")


if __name__ == "__main__":
    main()
