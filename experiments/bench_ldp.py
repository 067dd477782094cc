"""Privacy-utility curve of FedMF under local DP: benign HR@10 vs the per-round epsilon.

    python -m experiments.bench_ldp --quick                      # synthetic, 300 devices
    python -m experiments.bench_ldp --dataset ml-1m --rounds 10  # ML-1M

Every device clips its whole upload to L2 norm ``--bound`` and adds Laplace or Gaussian
noise calibrated to epsilon per round (clients.ldp_device); the accountant's worst total
over the run (basic composition for Laplace, RDP at delta 1e-5 for Gaussian) is reported
next to HR@10. epsilon = inf is clipping without noise. Plain loop (no Flower), resumable
CSV, a markdown table and a PNG curve in --out.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path
from typing import Any

from experiments.bench_attacks import code_version
from experiments.plain_loop import plain_loop

ROOT = Path(__file__).resolve().parents[1]
EPSILONS = (1.0, 10.0, 100.0, 1000.0, 10000.0, math.inf)
COLUMNS = ("dataset", "mechanism", "epsilon", "total_epsilon", "test_hr@10", "test_ndcg@10",
           "rounds", "wall_s")


def run_point(base: dict[str, Any], mechanism: str, eps: float, bound: float, out: Path) -> dict:
    """One run; mechanism "none" is the unprotected reference."""
    ov = dict(base)
    if mechanism != "none":
        ov.update({"ldp": mechanism, "ldp-bound": bound, "ldp-epsilon-mix": f"{eps}:1"})
    t0 = time.perf_counter()
    recs = plain_loop(ov, str(out / "runs" / f"{mechanism}-{eps}"), verbose=False)
    return {"dataset": base["dataset"], "mechanism": mechanism, "epsilon": eps,
            "total_epsilon": total_epsilon(recs[-1]),
            "test_hr@10": recs[-1]["test_hr@10"], "test_ndcg@10": recs[-1]["test_ndcg@10"],
            "rounds": len(recs), "wall_s": round(time.perf_counter() - t0, 1)}


def total_epsilon(last: dict[str, Any]) -> float:
    """Worst device's total after the run: inf when any device uploaded without noise."""
    if "agg_ldp_max_epsilon" not in last:
        return float("nan")
    return math.inf if last.get("agg_ldp_unprotected", 0.0) > 0 else last["agg_ldp_max_epsilon"]


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open() as fh:
        return [{k: (v if k in ("dataset", "mechanism") else float(v)) for k, v in r.items()}
                for r in csv.DictReader(fh)]


def write_outputs(out: Path, rows: list[dict[str, Any]], header: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: (r["mechanism"] != "none", r["mechanism"], r["epsilon"]))
    lines = [header, "", "| mechanism | epsilon / round | total epsilon (worst device) | HR@10 | NDCG@10 |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['mechanism']} | {r['epsilon']:g} | {r['total_epsilon']:.4g} | "
              f"{r['test_hr@10']:.3f} | {r['test_ndcg@10']:.3f} |" for r in rows]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for mech in ("laplace", "gaussian"):
        pts = sorted((r["epsilon"], r["test_hr@10"]) for r in rows if r["mechanism"] == mech)
        finite = [(e, h) for e, h in pts if math.isfinite(e)]
        if finite:
            ax.plot(*zip(*finite, strict=True), marker="o", label=mech)
    clip_only = [r["test_hr@10"] for r in rows if r["mechanism"] != "none"
                 and not math.isfinite(r["epsilon"])]
    for r in rows:
        if r["mechanism"] == "none":
            ax.axhline(r["test_hr@10"], color="grey", ls="--", label="no LDP")
    if clip_only:
        ax.axhline(clip_only[0], color="grey", ls=":", label="clip only (eps = inf)")
    ax.set_xscale("log")
    ax.set_xlabel("epsilon per round")
    ax.set_ylabel("HR@10")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    import torch

    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--bound", type=float, default=1.0)
    p.add_argument("--mechanisms", nargs="*", default=["laplace", "gaussian"])
    p.add_argument("--epsilons", nargs="*", type=float, default=list(EPSILONS))
    p.add_argument("--out", default="")
    a = p.parse_args(argv)
    base = {"strategy": "fedmf", "dataset": a.dataset, "num-rounds": a.rounds, "eval-every": 0,
            "quiet": True, "max-devices": 300 if a.quick else 0}
    out = Path(a.out or ROOT / "runs" / f"bench_ldp-{a.dataset}{'-quick' if a.quick else ''}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.csv"
    done = {(r["mechanism"], r["epsilon"]) for r in read_rows(path)}
    todo = [("none", math.inf)] + [(m, e) for m in a.mechanisms for e in a.epsilons]
    for mech, eps in todo:
        if (mech, eps) in done:
            continue
        row = run_point(base, mech, eps, a.bound, out)
        new = not path.exists()
        with path.open("a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS)
            if new:
                w.writeheader()
            w.writerow(row)
        print(row, flush=True)
    header = (f"FedMF on {a.dataset} (max-devices {base['max-devices'] or 'all'}), {a.rounds} rounds, "
              f"upload clipped to L2 <= {a.bound}, every device at the same epsilon per round; "
              f"code {code_version()}")
    write_outputs(out, read_rows(path), header)
    print(f"wrote {out / 'results.md'}, {out / 'curve.png'}")


if __name__ == "__main__":
    main()
