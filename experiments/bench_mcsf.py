"""Benchmark: one MC-SF round over every ML-1M device, cohorts vs one device per Flower
client vs the plain loop, and the cloud's slow step.

    python -m experiments.bench_mcsf [--cohort 512] [--per-device-subset 300] [--set k=v ...]

Each mode runs in a fresh subprocess (fresh Ray) from experiments/mcsf_ml1m.toml with two
rounds and one pre-training epoch (not measured); round 2 is measured (round 1 includes
starting Ray's workers):
  plain          the plain loop (no Flower, no Ray), cohorts of --cohort devices;
  cohort         Flower simulation, devices-per-client = --cohort, every device;
  per-device     Flower simulation, devices-per-client = 1, the first --per-device-subset
                 users (extrapolated linearly per device to the cohort run's devices);
  cohort-subset  the same users as per-device, in cohorts (the like-for-like ratio).
Reported per phase of round 2 (messages out to replies combined): the upload (F2S), the slow
step (cloud), the fast fit (devices), the evaluation; peak memory of the whole process tree
(Ray included). The ratios compare the fit phase.
JSON in --out (default runs/bench_mcsf.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments.bench_cohort import ROOT, measure, protocol_rounds
from experiments.run import parse_sets, read_run_config

CONFIG = ROOT / "experiments" / "mcsf_ml1m.toml"
PHASES = {"upload_s": "f2s_phase_wall_s", "slow_s": "slow_wall_s", "fit_s": "fit_phase_wall_s",
          "eval_s": "evaluate_phase_wall_s", "round_s": "round_wall_s"}


def child(mode: str, cohort: int, subset: int, sets: dict) -> None:
    """Runs inside the subprocess; prints one JSON line."""
    import torch

    torch.set_num_threads(1)
    flat = {**read_run_config(CONFIG), "num-rounds": 2, "eval-every": 0, "quiet": True,
            "mcsf-slow-pretrain-epochs": 1, "output-dir": str(ROOT / "runs" / "bench"),
            "run-name": f"bench-mcsf-{mode}", "devices-per-client": cohort, **sets}
    if mode in ("per-device", "cohort-subset"):
        flat["max-devices"] = subset
    if mode == "per-device":
        flat["devices-per-client"] = 1
    rounds, n = protocol_rounds(flat, plain=mode == "plain")
    r2 = rounds[1]
    print(json.dumps({**{k: r2.get(v) for k, v in PHASES.items()}, "devices": n,
                      "test_ndcg@5": r2.get("test_ndcg@5"),
                      "test_slow_ndcg@5": r2.get("test_slow_ndcg@5")}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", type=int, default=512)
    ap.add_argument("--per-device-subset", type=int, default=300)
    ap.add_argument("--modes", default="plain,cohort,per-device,cohort-subset")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_mcsf.json"))
    ap.add_argument("--child", choices=["plain", "cohort", "per-device", "cohort-subset"])
    a = ap.parse_args()
    if a.child:
        child(a.child, a.cohort, a.per_device_subset, parse_sets(a.set))
        return
    res: dict = {}
    for mode in a.modes.split(","):
        print(f"running {mode} ...", flush=True)
        sets = [x for s in a.set for x in ("--set", s)]
        out, peak = measure([sys.executable, "-m", "experiments.bench_mcsf", "--child", mode,
                             "--cohort", str(a.cohort), "--per-device-subset",
                             str(a.per_device_subset), *sets])
        res[mode] = {**out, "peak_pss_mb": peak.pss_bytes / 2**20,
                     "peak_rss_mb": peak.rss_bytes / 2**20, "peak_procs": peak.n_procs}
        print(json.dumps(res[mode]), flush=True)
    if {"cohort-subset", "per-device"} <= set(res):      # the same users both ways
        res["fit_per_device_vs_cohort_same_users"] = (res["per-device"]["fit_s"]
                                                      / res["cohort-subset"]["fit_s"])
    if {"cohort", "per-device"} <= set(res):
        per_dev = res["per-device"]["fit_s"] / res["per-device"]["devices"]
        res["per-device"]["extrapolated_fit_s"] = per_dev * res["cohort"]["devices"]
        res["fit_per_device_extrapolated_vs_cohort"] = (res["per-device"]["extrapolated_fit_s"]
                                                        / res["cohort"]["fit_s"])
    if {"cohort", "plain"} <= set(res):
        res["fit_cohort_vs_plain"] = res["cohort"]["fit_s"] / res["plain"]["fit_s"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, dict | list)}, indent=2))


if __name__ == "__main__":
    main()
