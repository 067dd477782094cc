"""Benchmark 7a: one full-population FedMF round, one device per Flower client vs cohorts.

    python -m experiments.bench_cohort [--dataset ml-1m] [--cohort 256] [--per-device-subset 300]

Three measurements, each in a fresh subprocess (fresh Ray):
  plain      the same device work in a plain Python loop, no Flower (experiments.plain_loop);
  cohort     Flower simulation, devices-per-client=N (all devices, one client per N);
  per-device Flower simulation, devices-per-client=1, on the first K devices only (a full
             6,040-client round takes 7-12 minutes here), extrapolated linearly to all devices.
Wall time is the fit phase of round 2 (round 1 includes Ray start and data loading); peak
memory is the whole process tree of each step (Ray's gcs_server, raylet and workers included;
``fedrec.memory.TreeSampler``, every 0.2 s): PSS (shared pages counted once) and RSS.
Results: a table on stdout and JSON in --out (default runs/bench_cohort.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from fedrec.memory import TreePeak, TreeSampler, become_subreaper

ROOT = Path(__file__).resolve().parents[1]


def measure(cmd: list[str]) -> tuple[dict, TreePeak]:
    """Run ``cmd``; return its last-line JSON and the peaks of this process's descendants
    (``cmd``, Ray's gcs_server/raylet/workers, and orphans, which re-parent to us)."""
    become_subreaper()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"})
    with TreeSampler(os.getpid(), interval_s=0.2, include_root=False) as sampler:
        out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed ({proc.returncode}): {' '.join(cmd)}")
    return json.loads(out.strip().splitlines()[-1]), sampler.peak


def protocol_rounds(flat: dict, plain: bool) -> tuple[list[dict], int]:
    """Run the run config ``flat`` in the plain loop (``plain``) or a Flower simulation with
    ``ceil(devices / devices-per-client)`` clients of one CPU each; -> (round records,
    devices). The shared body of the protocol benchmarks (bench_dccl, bench_coda, bench_mcsf)."""
    from experiments.setup import effective_config, resolve

    cfg, cls = resolve(effective_config({}, flat))
    run_dir = Path(cfg.output.output_dir) / str(flat["run-name"])
    if plain:
        from experiments.plain_loop import run_in_process

        run = run_in_process(flat, run_dir)
        return run.strategy.log.records, run.strategy.n_devices
    from flwr.client import ClientApp
    from flwr.simulation import run_simulation

    from experiments.client_app import make_client_fn
    from experiments.server_app import make_server_app
    from fedrec.results import read_rounds

    n = cls.prepare_data(cfg).n_devices
    run_simulation(server_app=make_server_app(flat),
                   client_app=ClientApp(client_fn=make_client_fn(flat)),
                   num_supernodes=math.ceil(n / cfg.sim.devices_per_client),
                   backend_config={"client_resources": {"num_cpus": 1}})
    return read_rounds(run_dir), n


def child(mode: str, dataset: str, cohort: int, subset: int) -> None:
    """Runs inside the subprocess; prints one JSON line."""
    import torch

    torch.set_num_threads(1)
    common = {"dataset": dataset, "num-rounds": 2, "eval-every": 0, "strategy": "fedmf",
              "simulate-dropouts": False, "quiet": True, "output-dir": str(ROOT / "runs" / "bench")}
    if mode == "plain":
        from experiments.plain_loop import plain_loop

        recs = plain_loop({**common, "devices-per-client": cohort}, str(ROOT / "runs/bench/plain"),
                          verbose=False)
        print(json.dumps({"fit_s": recs[1]["fit_s"], "devices": None}))
        return
    from flwr.client import ClientApp
    from flwr.simulation import run_simulation

    from experiments.client_app import make_client_fn
    from experiments.server_app import make_server_app
    from experiments.setup import effective_config, resolve
    from fedrec.results import read_rounds

    ov = {**common, "devices-per-client": 1 if mode == "per-device" else cohort,
          "max-devices": subset if mode == "per-device" else 0, "run-name": f"bench-{mode}"}
    cfg, cls = resolve(effective_config({}, ov))
    n = cls.prepare_data(cfg).n_devices
    run_simulation(server_app=make_server_app(ov), client_app=ClientApp(client_fn=make_client_fn(ov)),
                   num_supernodes=math.ceil(n / cfg.sim.devices_per_client),
                   backend_config={"client_resources": {"num_cpus": 1}})
    rounds = read_rounds(Path(cfg.output.output_dir) / f"bench-{mode}")
    print(json.dumps({"fit_s": rounds[1]["fit_wall_s"], "devices": n}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--cohort", type=int, default=256, help="devices per Flower client "
                    "(256 = the ML-1M presets' 24 clients)")
    ap.add_argument("--per-device-subset", type=int, default=300)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_cohort.json"))
    ap.add_argument("--child", choices=["plain", "cohort", "per-device"])
    a = ap.parse_args()
    if a.child:
        child(a.child, a.dataset, a.cohort, a.per_device_subset)
        return
    res = {}
    for mode in ("plain", "cohort", "per-device"):
        print(f"running {mode} ...", flush=True)
        out, peak = measure([sys.executable, "-m", "experiments.bench_cohort", "--child", mode,
                            "--dataset", a.dataset, "--cohort", str(a.cohort),
                            "--per-device-subset", str(a.per_device_subset)])
        res[mode] = {**out, "peak_pss_mb": peak.pss_bytes / 2**20,  # MiB
                     "peak_rss_mb": peak.rss_bytes / 2**20, "peak_procs": peak.n_procs}
    n_all = res["cohort"]["devices"]
    per_dev = res["per-device"]["fit_s"] / res["per-device"]["devices"]
    res["per-device"]["extrapolated_fit_s"] = per_dev * n_all
    res["speedup_cohort_vs_per_device"] = per_dev * n_all / res["cohort"]["fit_s"]
    res["cohort_vs_plain"] = res["cohort"]["fit_s"] / res["plain"]["fit_s"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print_table(res, a.dataset, a.cohort)


def print_table(res: dict, dataset: str, cohort: int) -> None:
    """The results as a table (memory in MiB)."""
    n_all = res["cohort"]["devices"]
    per_dev = res["per-device"]["fit_s"] / res["per-device"]["devices"]
    print(f"\n{dataset}, FedMF, one local epoch, {n_all} devices, round 2 fit phase")
    print(f"{'mode':<12}{'wall s':>10}{'per device ms':>15}{'tree PSS MiB':>14}{'tree RSS MiB':>14}")
    rows = [("plain loop", "plain", res["plain"]["fit_s"], res["plain"]["fit_s"] / n_all),
            (f"cohort {cohort}", "cohort", res["cohort"]["fit_s"], res["cohort"]["fit_s"] / n_all),
            ("per device", "per-device", res["per-device"]["extrapolated_fit_s"], per_dev)]
    for label, mode, wall, each in rows:
        print(f"{label:<12}{wall:>10.2f}{each * 1e3:>15.2f}{res[mode]['peak_pss_mb']:>14.0f}"
              f"{res[mode]['peak_rss_mb']:>14.0f}")
    print(f"(per device: measured on {res['per-device']['devices']} devices, extrapolated)")
    print(f"cohort speed-up vs one device per client: {res['speedup_cohort_vs_per_device']:.0f}x; "
          f"cohort / plain loop: {res['cohort_vs_plain']:.2f}x")


if __name__ == "__main__":
    main()
