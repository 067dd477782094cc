"""Benchmark: one DCCL round over every ML-1M device, cohorts vs one device per Flower
client vs the plain loop, and the MoMoDistill step.

    python -m experiments.bench_dccl [--cohort 256] [--per-device-subset 300] [--set k=v ...]

Each measurement runs in a fresh subprocess (fresh Ray) from experiments/dccl_ml1m.toml with
two rounds (round 2 is measured: round 1 includes starting Ray's workers), no evaluation
before the last round and no full ranking:
  plain      the plain loop (no Flower, no Ray), cohorts of --cohort devices;
  cohort     Flower simulation, devices-per-client = --cohort, every device;
  per-device Flower simulation, devices-per-client = 1, the first --per-device-subset devices,
             extrapolated linearly to all devices (the MetaPatch work per device is similar).
Reported per mode: the fit (MetaPatch) phase wall time of round 2, the MoMoDistill step, the
evaluation, and the peak memory of the whole process tree (Ray's processes included,
``fedrec.memory.TreeSampler``). JSON in --out (default runs/bench_dccl.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments.bench_cohort import ROOT, measure, protocol_rounds
from experiments.run import parse_sets, read_run_config

CONFIG = ROOT / "experiments" / "dccl_ml1m.toml"


def child(mode: str, cohort: int, subset: int, sets: dict) -> None:
    """Runs inside the subprocess; prints one JSON line."""
    import torch

    torch.set_num_threads(1)
    flat = {**read_run_config(CONFIG), "num-rounds": 2, "eval-every": 0,
            "dccl-full-ranking": False, "quiet": True, "output-dir": str(ROOT / "runs" / "bench"),
            "run-name": f"bench-dccl-{mode}", "devices-per-client": cohort, **sets}
    if mode == "per-device":
        flat.update({"devices-per-client": 1, "max-devices": subset})
    rounds, n = protocol_rounds(flat, plain=mode == "plain")
    r2 = rounds[1]
    print(json.dumps({"fit_s": r2["fit_wall_s"], "distill_s": r2["momodistill_wall_s"],
                      "eval_s": r2.get("evaluate_wall_s"), "devices": n,
                      "test_ndcg@10": r2.get("test_ndcg@10")}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", type=int, default=256)
    ap.add_argument("--per-device-subset", type=int, default=300)
    ap.add_argument("--modes", default="plain,cohort,per-device")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_dccl.json"))
    ap.add_argument("--child", choices=["plain", "cohort", "per-device"])
    a = ap.parse_args()
    if a.child:
        child(a.child, a.cohort, a.per_device_subset, parse_sets(a.set))
        return
    res: dict = {}
    for mode in a.modes.split(","):
        print(f"running {mode} ...", flush=True)
        sets = [x for s in a.set for x in ("--set", s)]
        out, peak = measure([sys.executable, "-m", "experiments.bench_dccl", "--child", mode,
                             "--cohort", str(a.cohort), "--per-device-subset",
                             str(a.per_device_subset), *sets])
        res[mode] = {**out, "peak_pss_mb": peak.pss_bytes / 2**20,
                     "peak_rss_mb": peak.rss_bytes / 2**20, "peak_procs": peak.n_procs}
        print(json.dumps(res[mode]), flush=True)
    if {"cohort", "per-device"} <= set(res):
        per_dev = res["per-device"]["fit_s"] / res["per-device"]["devices"]
        res["per-device"]["extrapolated_fit_s"] = per_dev * res["cohort"]["devices"]
        res["speedup_cohort_vs_per_device"] = res["per-device"]["extrapolated_fit_s"] / res["cohort"]["fit_s"]
    if {"cohort", "plain"} <= set(res):
        res["cohort_vs_plain"] = res["cohort"]["fit_s"] / res["plain"]["fit_s"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
    main()
