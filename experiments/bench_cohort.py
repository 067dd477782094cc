"""Benchmark 7a: one full-population FedMF round, one device per Flower client vs cohorts.

    python -m experiments.bench_cohort [--dataset ml-1m] [--cohort 256] [--per-device-subset 300]

Three measurements, each in a fresh subprocess (fresh Ray):
  plain      the same device work in a plain Python loop, no Flower (experiments.plain_loop);
  cohort     Flower simulation, devices-per-client=N (all devices, one client per N);
  per-device Flower simulation, devices-per-client=1, on the first K devices only (a full
             6,040-client round takes 7-12 minutes here), extrapolated linearly to all devices.
Wall time is the fit phase of round 2 (round 1 includes Ray start and data loading); peak RSS
is the sum over this process tree (Ray workers included), sampled every 0.2 s.
Results: a table on stdout and JSON in --out (default runs/bench_cohort.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tree_rss_bytes(pid: int) -> int:
    """Sum of RSS over ``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(stat[1]), []).append(int(entry.name))
            rss[int(entry.name)] = int(stat[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def measure(cmd: list[str]) -> tuple[dict, float]:
    """Run ``cmd``; return its last-line JSON and the peak tree RSS in bytes."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"})
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_bytes(proc.pid))
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, _ = proc.communicate()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed ({proc.returncode}): {' '.join(cmd)}")
    return json.loads(out.strip().splitlines()[-1]), peak[0]


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
        out, rss = measure([sys.executable, "-m", "experiments.bench_cohort", "--child", mode,
                            "--dataset", a.dataset, "--cohort", str(a.cohort),
                            "--per-device-subset", str(a.per_device_subset)])
        res[mode] = {**out, "peak_rss_mb": rss / 2**20}
    n_all = res["cohort"]["devices"]
    per_dev = res["per-device"]["fit_s"] / res["per-device"]["devices"]
    res["per-device"]["extrapolated_fit_s"] = per_dev * n_all
    res["speedup_cohort_vs_per_device"] = per_dev * n_all / res["cohort"]["fit_s"]
    res["cohort_vs_plain"] = res["cohort"]["fit_s"] / res["plain"]["fit_s"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(f"\n{a.dataset}, FedMF, one local epoch, {n_all} devices, round 2 fit phase")
    print(f"{'mode':<12}{'wall s':>10}{'per device ms':>15}{'peak RSS MB':>13}")
    print(f"{'plain loop':<12}{res['plain']['fit_s']:>10.2f}{res['plain']['fit_s'] / n_all * 1e3:>15.2f}"
          f"{res['plain']['peak_rss_mb']:>13.0f}")
    print(f"{'cohort ' + str(a.cohort):<12}{res['cohort']['fit_s']:>10.2f}"
          f"{res['cohort']['fit_s'] / n_all * 1e3:>15.2f}{res['cohort']['peak_rss_mb']:>13.0f}")
    print(f"{'per device':<12}{res['per-device']['extrapolated_fit_s']:>10.1f}{per_dev * 1e3:>15.2f}"
          f"{res['per-device']['peak_rss_mb']:>13.0f}  (measured on {res['per-device']['devices']} "
          "devices, extrapolated)")
    print(f"cohort speed-up vs one device per client: {res['speedup_cohort_vs_per_device']:.0f}x; "
          f"cohort / plain loop: {res['cohort_vs_plain']:.2f}x")


if __name__ == "__main__":
    main()
