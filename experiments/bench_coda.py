"""Benchmark: one CoDA day over every ML-1M device with timestamps, cohorts vs one device per
Flower client vs the plain loop; and the cloud's KNN matching for 6,040 and 100,000 users.

    python -m experiments.bench_coda [--cohort 256] [--per-device-subset 300] [--set k=v ...]
    python -m experiments.bench_coda --modes knn [--users 6040,100000]

Day modes run in a fresh subprocess each (fresh Ray) from experiments/coda_ml1m.toml with
``coda-first-day = 6`` and two rounds: round 2 (week 7, after the busiest week) is measured
(round 1 includes starting Ray's workers):
  plain      the plain loop (no Flower, no Ray), cohorts of --cohort devices;
  cohort     Flower simulation, devices-per-client = --cohort, every device;
  per-device Flower simulation, devices-per-client = 1, the first --per-device-subset users,
             extrapolated linearly per selected device to the cohort run's devices;
  cohort-subset  the same users as per-device, in cohorts (the like-for-like ratio).
Reported: the day phase's wall time (fit), the overnight matching step, devices of the day,
peak memory of the whole process tree (Ray included). ``knn``: user vectors (category
histograms of a synthetic population with ML-1M's 18 genres), z-scoring, faiss exact K=100
search and the matched batches of every user, timed in this process.
JSON in --out (default runs/bench_coda.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from experiments.bench_cohort import ROOT, measure, protocol_rounds
from experiments.run import parse_sets, read_run_config

CONFIG = ROOT / "experiments" / "coda_ml1m.toml"


def child(mode: str, cohort: int, subset: int, sets: dict) -> None:
    """Runs inside the subprocess; prints one JSON line."""
    import torch

    torch.set_num_threads(1)
    flat = {**read_run_config(CONFIG), "num-rounds": 2, "coda-first-day": 6, "quiet": True,
            "output-dir": str(ROOT / "runs" / "bench"), "run-name": f"bench-coda-{mode}",
            "devices-per-client": cohort, **sets}
    if mode == "per-device":
        flat.update({"devices-per-client": 1, "max-devices": subset})
    if mode == "cohort-subset":          # the per-device run's users, in cohorts
        flat.update({"max-devices": subset})
    rounds, _ = protocol_rounds(flat, plain=mode == "plain")
    r2 = rounds[1]
    print(json.dumps({"fit_s": r2["fit_wall_s"], "match_s": r2["match_wall_s"],
                      "devices": r2["devices_selected"], "test_gauc": r2["test_gauc"]}))


def knn_bench(users: int, k: int = 100) -> dict[str, float]:
    """Matching for a synthetic population of ``users`` (18 categories, as ML-1M's genres)."""
    from fedrec.coda.matching import (
        category_vectors,
        knn_users,
        matched_batches,
        recent_index,
        zscore,
    )
    from fedrec.data.synthetic import SyntheticConfig, generate

    data = generate(SyntheticConfig(n_users=users, n_items=3706, n_categories=18,
                                    mean_interactions=30.0))
    df = data.interactions
    owner = df["user"].to_numpy(np.int64) - 1
    cat = df["category"].astype("int64").to_numpy() % 18
    t0 = time.perf_counter()
    ids, vec = category_vectors(owner, cat, users, 18)
    vec = zscore(vec)
    t1 = time.perf_counter()
    nn = knn_users(vec, k)
    t2 = time.perf_counter()
    day = (df["ts"].to_numpy(np.int64) - int(df["ts"].min())) // 86_400
    last = np.flatnonzero(day == day.max())         # "yesterday": the last day's events
    index = recent_index(np.arange(len(last) * 5), np.repeat(owner[last], 5))   # 5 samples each
    for row, u in enumerate(ids.tolist()):
        matched_batches(u, ids[nn[row]], index, np.random.default_rng(u), 25, 40, 12)
    t3 = time.perf_counter()
    return {"users": users, "events": len(owner), "vectors_s": t1 - t0, "knn_s": t2 - t1,
            "batches_s": t3 - t2, "total_s": t3 - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", type=int, default=256)
    ap.add_argument("--per-device-subset", type=int, default=300)
    ap.add_argument("--modes", default="plain,cohort,per-device,cohort-subset,knn")
    ap.add_argument("--users", default="6040,100000")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_coda.json"))
    ap.add_argument("--child", choices=["plain", "cohort", "per-device", "cohort-subset"])
    a = ap.parse_args()
    if a.child:
        child(a.child, a.cohort, a.per_device_subset, parse_sets(a.set))
        return
    res: dict = {}
    for mode in a.modes.split(","):
        print(f"running {mode} ...", flush=True)
        if mode == "knn":
            res["knn"] = [knn_bench(int(u)) for u in a.users.split(",")]
            print(json.dumps(res["knn"]), flush=True)
            continue
        sets = [x for s in a.set for x in ("--set", s)]
        out, peak = measure([sys.executable, "-m", "experiments.bench_coda", "--child", mode,
                             "--cohort", str(a.cohort), "--per-device-subset",
                             str(a.per_device_subset), *sets])
        res[mode] = {**out, "peak_pss_mb": peak.pss_bytes / 2**20,
                     "peak_rss_mb": peak.rss_bytes / 2**20, "peak_procs": peak.n_procs}
        print(json.dumps(res[mode]), flush=True)
    if {"cohort-subset", "per-device"} <= set(res):      # the same users both ways
        res["speedup_cohort_vs_per_device_same_users"] = (res["per-device"]["fit_s"]
                                                          / res["cohort-subset"]["fit_s"])
    if {"cohort", "per-device"} <= set(res):
        per_dev = res["per-device"]["fit_s"] / res["per-device"]["devices"]
        res["per-device"]["extrapolated_fit_s"] = per_dev * res["cohort"]["devices"]
        res["speedup_cohort_vs_per_device"] = res["per-device"]["extrapolated_fit_s"] / res["cohort"]["fit_s"]
    if {"cohort", "plain"} <= set(res):
        res["cohort_vs_plain"] = res["cohort"]["fit_s"] / res["plain"]["fit_s"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, dict | list)}, indent=2))


if __name__ == "__main__":
    main()
