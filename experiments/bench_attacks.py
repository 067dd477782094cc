"""Attack x defence x malicious-fraction benchmark of FedMF (or --strategy; issue 5, section 5).

    python -m experiments.bench_attacks --quick                 # synthetic, a few minutes
    python -m experiments.bench_attacks --dataset ml-1m         # the full matrix on ML-1M
    python -m experiments.bench_attacks --dataset ml-1m --attacks pipattack --defences none median
    python -m experiments.bench_attacks --quick --strategy fedncf --fractions 0.05
    python -m experiments.bench_attacks --dataset ml-1m --render   # tables + heatmap of what ran

Every cell is one FedMF run in the plain loop (experiments.plain_loop: the devices' and the
cloud's work without Flower; tests/experiments/test_threats_flower.py checks that a Flower
run gives the same numbers). Per cell, after the last round: ER@5/ER@10 of the target items
over benign users (device-side, full ranking), benign HR@10/NDCG@10 (leave-one-out, sampled
negatives), and detection counts summed over rounds. The "none" attack row is a targeted
attack with fraction 0 (targets chosen, nobody attacks): it measures the targets' natural
exposure. Rows are appended to <out>/results.csv as they finish, so an interrupted run
resumes where it stopped; <out>/results.md and <out>/heatmap.png are rewritten at the end.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from clients.attacks.population import n_malicious
from experiments.plain_loop import plain_loop
from experiments.setup import effective_config, resolve
from fedrec.threat_config import UNTARGETED_ATTACKS

ROOT = Path(__file__).resolve().parents[1]
FRACTIONS = (0.001, 0.01, 0.05)
ALL_ATTACKS = ("none", "fake-random", "fake-popular", "pipattack", "fedrecattack", "psmu",
               "scaled", "noise", "signflip")
ALL_DEFENCES = ("none", "median", "trimmed-mean", "norm-bound", "krum", "multi-krum", "hics")
QUICK_ATTACKS = ("none", "fake-popular", "pipattack", "fedrecattack", "psmu", "signflip")
QUICK_DEFENCES = ("none", "median", "norm-bound", "multi-krum", "hics")
#: attack strength used in the matrix (model poisoning boosted 10x; see --scale)
ATTACK_KEYS: dict[str, dict[str, Any]] = {
    "pipattack": {"attack-scale": 10.0}, "fedrecattack": {"attack-scale": 10.0},
    "psmu": {"attack-scale": 10.0}, "scaled": {"attack-scale": 10.0},
    "signflip": {"attack-scale": 1.0}, "noise": {"attack-noise-std": 0.1},
}
#: defence settings: norm bound ~3x the benign median upload norm (FedMF, synthetic), HiCS row
#: bound above ~99% of benign rows
DEFENCE_KEYS: dict[str, Any] = {"defence-bound": 2.0, "defence-beta": 0.1,
                                "defence-krum-fraction": 0.05, "defence-hics-row-bound": 0.3,
                                "defence-hics-agg-bound": 0.1, "defence-hics-keep": 0.8}
COLUMNS = ("dataset", "attack", "defence", "fraction", "malicious", "er@5", "er@10",
           "test_hr@10", "test_ndcg@10", "flagged", "flagged_malicious", "malicious_uploads",
           "rounds", "wall_s")


def cell_overrides(base: dict[str, Any], attack: str, defence: str, fraction: float) -> dict[str, Any]:
    """Run-config of one cell ("none" attack = a targeted attack nobody carries out)."""
    kind, frac = ("fake-random", 0.0) if attack == "none" else (attack, fraction)
    return {**base, "attack": kind, "attack-fraction": frac, **ATTACK_KEYS.get(attack, {}),
            "defence": defence, **(DEFENCE_KEYS if defence != "none" else {})}


def run_cell(base: dict[str, Any], attack: str, defence: str, fraction: float,
             out: Path) -> dict[str, Any]:
    """One plain-loop run; its final metrics and the detection counts summed over rounds."""
    ov = cell_overrides(base, attack, defence, fraction)
    t0 = time.perf_counter()
    records = plain_loop(ov, str(out / "runs" / f"{attack}-{defence}-{fraction}"), verbose=False)
    last = records[-1]
    total = lambda k: sum(r.get(f"agg_{k}", 0.0) for r in records)
    cfg, cls = resolve(effective_config({}, {**ov, "simulate-dropouts": False}))
    n_dev = cls.prepare_data(cfg).n_devices
    return {
        "dataset": base.get("dataset", "synthetic"), "attack": attack, "defence": defence,
        "fraction": fraction, "malicious": n_malicious(n_dev, ov["attack-fraction"]),
        "er@5": last.get("er@5", float("nan")), "er@10": last.get("er@10", float("nan")),
        "test_hr@10": last.get("test_hr@10"), "test_ndcg@10": last.get("test_ndcg@10"),
        "flagged": total("def_flagged"), "flagged_malicious": total("def_flagged_malicious"),
        "malicious_uploads": total("malicious"), "rounds": len(records),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open() as fh:
        return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _num(v: str) -> Any:
    try:
        return float(v)
    except ValueError:
        return v


def append_row(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        if new:
            w.writeheader()
        w.writerow(row)


def cells(attacks: tuple[str, ...], defences: tuple[str, ...],
          fractions: tuple[float, ...]) -> list[tuple[str, str, float]]:
    """The matrix; the "none" attack does not depend on the fraction: one cell per defence."""
    out = [("none", d, 0.0) for d in defences if "none" in attacks]
    return out + [(a, d, f) for f in fractions for a in attacks if a != "none" for d in defences]


def table(rows: list[dict[str, Any]], metric: str, fraction: float, attacks: tuple[str, ...],
          defences: tuple[str, ...]) -> str:
    """Markdown table attack x defence of one metric at one fraction ("none" row: fraction 0)."""
    get = {(r["attack"], r["defence"], float(r["fraction"])): r for r in rows}
    lines = [f"| {metric} @ {fraction:.1%} | " + " | ".join(defences) + " |",
             "|---" * (len(defences) + 1) + "|"]
    for a in attacks:
        f = 0.0 if a == "none" else fraction
        vals = [get.get((a, d, f), {}).get(metric) for d in defences]
        lines.append(f"| {a} | " + " | ".join(_fmt(v) for v in vals) + " |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return "" if v is None or v == "" or math.isnan(float(v)) else f"{float(v):.3f}"


def detection_table(rows: list[dict[str, Any]]) -> str:
    """Devices flagged by Krum / norm bounding / HiCS, and how many of them were attackers."""
    lines = ["| attack | defence | fraction | flagged | of which malicious | malicious uploads |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r["defence"] in ("krum", "multi-krum", "norm-bound", "hics") and r["attack"] != "none":
            lines.append(f"| {r['attack']} | {r['defence']} | {float(r['fraction']):.1%} | "
                         f"{int(r['flagged'])} | {int(r['flagged_malicious'])} | "
                         f"{int(r['malicious_uploads'])} |")
    return "\n".join(lines)


def write_markdown(path: Path, rows: list[dict[str, Any]], attacks: tuple[str, ...],
                   defences: tuple[str, ...], fractions: tuple[float, ...], header: str) -> None:
    targeted = tuple(a for a in attacks if a not in UNTARGETED_ATTACKS)
    parts = [header]
    for f in fractions:
        parts += [table(rows, "er@10", f, targeted, defences),
                  table(rows, "test_hr@10", f, attacks, defences)]
    parts.append(detection_table(rows))
    path.write_text("\n\n".join(parts) + "\n")


def heatmap(path: Path, rows: list[dict[str, Any]], attacks: tuple[str, ...],
            defences: tuple[str, ...], fractions: tuple[float, ...]) -> None:
    """Per fraction: ER@10 of the targeted attacks, and benign HR@10 minus the clean run's
    (no attack, no defence), attack x defence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    get = {(r["attack"], r["defence"], float(r["fraction"])): r for r in rows}
    clean = _val(get.get(("none", "none", 0.0), {}), "test_hr@10")
    targeted = [a for a in attacks if a not in UNTARGETED_ATTACKS]
    fig, axes = plt.subplots(2, len(fractions), figsize=(4.2 * len(fractions), 7.5), squeeze=False)
    for j, f in enumerate(fractions):
        for i, (metric, names) in enumerate((("er@10", targeted), ("test_hr@10", list(attacks)))):
            m = np.array([[_val(get.get((a, d, 0.0 if a == "none" else f), {}), metric)
                           for d in defences] for a in names])
            if metric == "er@10":
                lo, hi, cmap, title = 0.0, 1.0, "Reds", f"ER@10, {f:.1%} malicious"
            else:
                m = m - clean
                hi = max(0.02, float(np.nanmax(np.abs(m), initial=0.0)))
                lo, cmap, title = -hi, "RdBu", f"HR@10 - clean ({clean:.3f}), {f:.1%} malicious"
            _panel(axes[i, j], m, names, defences, (lo, hi), cmap, title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _panel(ax: Any, m: Any, names: list[str], defences: tuple[str, ...],
           limits: tuple[float, float], cmap: str, title: str) -> None:
    ax.imshow(m, cmap=cmap, vmin=limits[0], vmax=limits[1])
    ax.set_xticks(range(len(defences)), defences, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_title(title, fontsize=9)
    for (y, x), v in np.ndenumerate(m):
        dark = not math.isnan(v) and abs(v) > 0.6 * limits[1]
        ax.text(x, y, "" if math.isnan(v) else f"{v:+.2f}" if limits[0] < 0 else f"{v:.2f}",
                ha="center", va="center", fontsize=7, color="white" if dark else "black")


def _val(row: dict[str, Any], metric: str) -> float:
    v = row.get(metric)
    return float("nan") if v is None or v == "" else float(v)


def code_version() -> str:
    """``git describe --always --dirty`` of the repository (the numbers depend on the code)."""
    import subprocess

    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="synthetic, 300 devices, small matrix")
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--strategy", default="fedmf", help="any strategy uploading SparseRows item rows")
    p.add_argument("--max-devices", type=int, default=0)
    p.add_argument("--rounds", type=int, default=0, help="0 = 10 (quick) / 20")
    p.add_argument("--attacks", nargs="*", default=None)
    p.add_argument("--defences", nargs="*", default=None)
    p.add_argument("--fractions", nargs="*", type=float, default=list(FRACTIONS))
    p.add_argument("--targets", type=int, default=1, help="number of target items k")
    p.add_argument("--out", default="")
    p.add_argument("--render", action="store_true",
                   help="only rewrite results.md / heatmap.png from results.csv (missing cells blank)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import torch

    torch.set_num_threads(1)
    a = parse_args(argv)
    attacks = tuple(a.attacks or (QUICK_ATTACKS if a.quick else ALL_ATTACKS))
    defences = tuple(a.defences or (QUICK_DEFENCES if a.quick else ALL_DEFENCES))
    fractions = tuple(a.fractions)
    rounds = a.rounds or (10 if a.quick else 20)
    base = {"strategy": a.strategy, "dataset": a.dataset, "num-rounds": rounds, "eval-every": 0,
            "quiet": True, "attack-targets": a.targets,
            "max-devices": a.max_devices or (300 if a.quick else 0)}
    tag = f"{a.strategy}-{a.dataset}{'-quick' if a.quick else ''}".removeprefix("fedmf-")
    out = Path(a.out or ROOT / "runs" / f"bench_attacks-{tag}")
    if a.render and not (out / "results.csv").is_file():
        raise SystemExit(f"--render: no {out / 'results.csv'}; run the matrix first (without --render)")
    out.mkdir(parents=True, exist_ok=True)
    done = {(r["attack"], r["defence"], float(r["fraction"])) for r in read_rows(out / "results.csv")}
    for attack, defence, f in cells(attacks, defences, fractions):
        if (attack, defence, f) in done or a.render:
            continue
        row = run_cell(base, attack, defence, f, out)
        append_row(out / "results.csv", row)
        print(" ".join(f"{k}={row[k]}" for k in COLUMNS), flush=True)
    rows = read_rows(out / "results.csv")
    ran = sorted({int(r["rounds"]) for r in rows}) or [rounds]  # what the cells ran, not --rounds
    header = (f"{a.strategy} on {a.dataset} (max-devices {base['max-devices'] or 'all'}), "
              f"{'/'.join(map(str, ran))} rounds, "
              f"k={a.targets} target item(s); plain loop; code {code_version()}.")
    write_markdown(out / "results.md", rows, attacks, defences, fractions, header)
    heatmap(out / "heatmap.png", rows, attacks, defences, fractions)
    print(f"wrote {out / 'results.csv'}, {out / 'results.md'}, {out / 'heatmap.png'}")


if __name__ == "__main__":
    main()
