"""Scale benchmark: FedMF rounds over 1,000 to 100,000 synthetic devices on this machine.

    python -m experiments.bench_scale [--users 1000,6040,10000,30000,100000] [--cohort 1024]
                                      [--engine flwr] [--out runs/bench_scale]

For each population N: ``python -m experiments.run`` (the documented launcher, Flower
simulation by default) with ``dataset = synthetic``, ``synthetic-users = N`` (the "small"
generator: 1,000 items, ~60 interactions per user), every device in every round, 3 rounds,
evaluation (99 sampled negatives, every device) in round 3 only, dropouts off, the devices'
private state (FedMF's user vectors) kept on disk by their hosts. Measured:

* round 2 (the first without Ray's start-up): the fit phase and the whole round, seconds;
  per device = / N;
* round 3: fit + evaluation of every device;
* peak memory of the whole process tree (launcher, SuperLink, SuperExec, simulation, Ray's
  gcs_server, raylet and workers; orphans re-parent to this process, a subreaper), PSS and
  RSS, sampled every 0.5 s (fedrec.memory);
* the devices' private state on disk after the run (``keep-device-state = true``), bytes.

Each population runs alone, one after the other, in a fresh process tree. JSON and a plot
(time per device and memory against N) in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fedrec.memory import TreeSampler, become_subreaper
from fedrec.results import read_rounds, read_summary

ROOT = Path(__file__).resolve().parents[1]


def run_one(n_users: int, cohort: int, engine: str, out: Path, state_root: Path) -> dict:
    name = f"scale-{n_users}"
    shutil.rmtree(out / name, ignore_errors=True)
    cmd = [sys.executable, "-m", "experiments.run", "--engine", engine]
    for kv in ("strategy=fedmf", "dataset=synthetic", f"synthetic-users={n_users}",
               "num-rounds=3", "eval-every=3", "simulate-dropouts=false", "quiet=true",
               f"devices-per-client={cohort}", "keep-device-state=true",
               f"output-dir={out}", f"run-name={name}"):
        cmd += ["--set", kv]
    env = {**os.environ, "FEDREC_STATE_DIR": str(state_root)}
    with TreeSampler(os.getpid(), interval_s=0.5, include_root=False) as sampler, \
            (out / f"{name}.log").open("w") as log:
        status = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                check=False).returncode
    if status != 0:
        raise SystemExit(f"{name} failed ({status}); see {out / f'{name}.log'}")
    run_dir = out / name
    rounds, summary = read_rounds(run_dir), read_summary(run_dir)
    state = state_root / (run_dir / "run_id").read_text()
    state_bytes = sum(p.stat().st_size for p in state.rglob("*") if p.is_file())
    shutil.rmtree(state, ignore_errors=True)
    r2, r3 = rounds[1], rounds[2]
    return {"devices": n_users, "clients": -(-n_users // cohort),
            "fit_s": r2["fit_wall_s"], "round_s": r2["round_wall_s"],
            "fit_ms_per_device": 1e3 * r2["fit_wall_s"] / n_users,
            "round3_with_eval_s": r3["round_wall_s"],
            "devices_ok": r2["devices_ok"], "eval_devices": r3.get("eval_devices"),
            "test_hr@10": r3.get("test_hr@10"), "wall_s": summary.get("wall_s"),
            "peak_pss_bytes": sampler.peak.pss_bytes, "peak_rss_bytes": sampler.peak.rss_bytes,
            "peak_procs": sampler.peak.n_procs, "state_bytes": state_bytes}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["devices"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(n, [r["fit_ms_per_device"] for r in rows], "o-", label="fit phase, per device")
    a.plot(n, [1e3 * r["round_s"] / r["devices"] for r in rows], "s--", label="round, per device")
    a.set(xscale="log", xlabel="devices per round", ylabel="ms per device (round 2)",
          title="time per device")
    a.set_ylim(bottom=0)
    a.legend()
    b.plot(n, [r["peak_pss_bytes"] / 2**30 for r in rows], "o-", label="peak tree PSS")
    b.plot(n, [r["peak_rss_bytes"] / 2**30 for r in rows], "s--", label="peak tree RSS")
    b.set(xscale="log", xlabel="devices per round", ylabel="GiB", title="memory (whole tree)")
    b.set_ylim(bottom=0)
    b.legend()
    fig.suptitle("FedMF on synthetic data, Flower simulation, 2 cores")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", default="1000,6040,10000,30000,100000")
    ap.add_argument("--cohort", type=int, default=1024, help="devices per Flower client")
    ap.add_argument("--engine", default="flwr", choices=["flwr", "inprocess", "deployment"])
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_scale"))
    a = ap.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    become_subreaper()
    state_root = Path(tempfile.mkdtemp(prefix="fedrec-scale-state-"))
    rows = []
    try:
        for n in (int(x) for x in a.users.split(",")):
            print(f"{n} devices ...", flush=True)
            rows.append(run_one(n, a.cohort, a.engine, out, state_root))
            r = rows[-1]
            print(f"  fit {r['fit_s']:.1f} s ({r['fit_ms_per_device']:.2f} ms/device), round "
                  f"{r['round_s']:.1f} s, with evaluation {r['round3_with_eval_s']:.1f} s, peak "
                  f"PSS {r['peak_pss_bytes'] / 2**30:.2f} GiB, state {r['state_bytes'] / 2**20:.1f}"
                  f" MiB", flush=True)
            (out / "bench_scale.json").write_text(json.dumps(
                {"engine": a.engine, "cohort": a.cohort, "rows": rows}, indent=2))
    finally:
        shutil.rmtree(state_root, ignore_errors=True)
    plot(rows, out / "bench_scale.png")
    print(f"wrote {out / 'bench_scale.json'} and {out / 'bench_scale.png'}")


if __name__ == "__main__":
    main()
