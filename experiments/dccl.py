"""DCCL's experiments (Yao et al., KDD 2021; docs/dccl.md): one command each, results as
json + markdown (+ png) under ``--out/<run-config stem>/``.

    python -m experiments.dccl table2 --run-config experiments/dccl_ml1m.toml
    python -m experiments.dccl table4 --run-config experiments/dccl_taobao.toml
    python -m experiments.dccl rounds --run-config experiments/dccl_taobao.toml --values 1,2,4
    python -m experiments.dccl sweep meta-dim --run-config ... --values 8,16,32,64
    python -m experiments.dccl sweep beta --run-config ... --values 0,0.01,0.1,1
    python -m experiments.dccl fig4 --run-config experiments/dccl_ml1m.toml   (after table2)

Protocol (the paper's): leave-last-out test, ``eval-negatives`` sampled items the user never
touched (100), HR@1/5/10 and NDCG@5/10 in percent; also the full ranking (every item, the
user's training items excluded) of the same test event. DCCL pre-trains f on the first half
(in time) of each user's training events and runs its rounds on the second half; the
baselines (MF, NeuMF, SASRec, DIN) train centrally on both halves. Which model is scored:
DIN = f trained centrally, "f (pre-trained)" = DCCL's f before the round, DCCL-e = f + the
device's MetaPatch, DCCL-m = f and Theta after MoMoDistill with U(theta, u) (the paper's DCCL).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.dccl_plots import (
    device_metric,
    group_auc,
    paired_delta,
    plot_groups,
    plot_rounds,
    plot_sweep,
)
from experiments.plain_loop import run_in_process
from experiments.run import parse_sets, read_run_config
from experiments.setup import effective_config, resolve
from fedrec.config import protocol_options
from fedrec.dccl.central import CentralSpec, ranks_summary, train_central
from fedrec.dccl.config import DCCLConfig
from fedrec.dccl.scoring import evaluate_devices
from fedrec.dccl.train import fit_epochs
from fedrec.results import atomic_write, dumps
from strategies.dccl import DCCL

COLS = ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10", "full_hr@10", "full_ndcg@10", "auc")


def log(msg: str) -> None:
    print(f"[dccl {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pick(record: dict[str, Any], prefix: str) -> dict[str, float]:
    """Test metrics of one scored model from a round record (``prefix``: "" DCCL-m, "agg_e_"
    DCCL-e, "agg_f_" f before the round, "fm_" f after MoMoDistill)."""
    out = {}
    for c in COLS:
        key = f"{prefix}test_{c}"
        if key in record:
            out[c] = float(record[key])
    return out


def run_dccl(flat: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """One DCCL run in this process; its per-round records and scored models."""
    t0 = time.perf_counter()
    run = run_in_process(flat, run_dir)
    records = run.strategy.log.records
    last = records[-1]
    return {"DCCL-m": pick(last, ""), "DCCL-e": pick(last, "agg_e_"),
            "f (pre-trained)": pick(records[0], "agg_f_"), "f after MoMoDistill": pick(last, "fm_"),
            "rounds": [{"round": r["round"], **pick(r, ""), "e": pick(r, "agg_e_")} for r in records],
            "facts": run.strategy.facts, "wall_s": time.perf_counter() - t0}


def paired(run_dir: Path, ref_dir: Path | None, metric: str = "hr@10") -> dict[str, Any]:
    """Paired differences of per-user test ``metric`` from the runs' dccl_devices.csv:
    DCCL-e - f, both in the device's last fit round (MetaPatch's gain), and, given
    ``ref_dir``, DCCL-m - the reference arm's DCCL-m, only where both arms have the same
    users (device ids and training events agree: the option did not change the data)."""
    csv_of = lambda d: d / "dccl_devices.csv"
    out: dict[str, Any] = {"e_minus_f": paired_delta(
        device_metric(csv_of(run_dir), f"e_test_{metric}"),
        device_metric(csv_of(run_dir), f"f_test_{metric}"))}
    if ref_dir is not None:
        if device_metric(csv_of(run_dir), "train_events") != device_metric(csv_of(ref_dir), "train_events"):
            out["unpaired"] = "the arms' users differ (the option changes the data)"
        else:
            out["vs_ref"] = paired_delta(device_metric(csv_of(run_dir), f"test_{metric}"),
                                         device_metric(csv_of(ref_dir), f"test_{metric}"))
    return out


def central_din(flat: dict[str, Any]) -> dict[str, float]:
    """DIN (f, no patches) trained centrally on both halves, scored like DCCL."""
    cfg, _ = resolve(effective_config({}, {**flat, "strategy": "dccl"}))
    view = DCCL.prepare_data(cfg)
    strat = DCCL.__new__(DCCL)              # only its data helpers: no pre-training
    strat.cfg, strat.opt, strat.cloud = cfg, protocol_options(cfg, DCCLConfig), view.cloud()
    model = strat.model()
    o = strat.opt
    fit_epochs(model, model.backbone_names(), lambda e: strat.rows(-1, e), strat.codes,
               lambda rows: None, None, epochs=o.pretrain_epochs, lr=o.cloud_lr,
               batch=o.cloud_batch, beta=0.0, seed=cfg.train.seed,
               progress=lambda m: log(f"DIN {m}"))
    devs = [view.device(d) for d in range(view.n_devices)]
    codes = strat.codes
    per = evaluate_devices(model, devs, codes, {"": None}, "" if o.full_ranking else None)
    return {c: float(np.mean([m[f"test_{c}"] for m in per if f"test_{c}" in m])) for c in COLS
            if any(f"test_{c}" in m for m in per)}


def central(flat: dict[str, Any], model: str, epochs: int) -> dict[str, float]:
    cfg, _ = resolve(effective_config({}, {**flat, "strategy": "dccl"}))
    view = DCCL.prepare_data(cfg)
    dim = 50 if model == "sasrec" else 32
    res = train_central(view, CentralSpec(model=model, dim=dim, epochs=epochs, seed=cfg.train.seed),
                        progress=lambda m: log(f"{model} {m}"))
    out = {k.lower(): v for k, v in ranks_summary(res.sampled_ranks).items()}
    out.update({f"full_{k.lower()}": v for k, v in ranks_summary(res.full_ranks).items()})
    return out


def table2(base: dict[str, Any], out: Path, rows: tuple[str, ...], epochs: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if "dccl" in rows:
        r = run_dccl(base, out / "dccl")
        for name in ("f (pre-trained)", "DCCL-e", "DCCL-m", "f after MoMoDistill"):
            result[name] = r[name]
        result["DCCL-e"] = {**r["DCCL-e"], "paired": paired(out / "dccl", None)}
        result["_dccl_facts"] = r["facts"]
        log(f"DCCL-m {r['DCCL-m']}")
    if "din" in rows:
        result["DIN"] = central_din(base)
        log(f"DIN {result['DIN']}")
    for model, name in (("mf", "MF"), ("neumf", "NeuMF"), ("sasrec", "SASRec")):
        if model in rows:
            result[name] = central(base, model, epochs)
            log(f"{name} {result[name]}")
    return result


def markdown(rows: dict[str, Any], title: str) -> str:
    lines = [f"### {title}", "", "| model | " + " | ".join(COLS) + " |",
             "|---|" + "---|" * len(COLS)]
    for name, m in rows.items():
        if name.startswith("_") or not isinstance(m, dict):
            continue
        cells = [f"{100 * m[c]:.2f}" if c in m else "" for c in COLS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    pairs = {n: m["paired"] for n, m in rows.items() if isinstance(m, dict) and "paired" in m}
    if pairs:
        lines += ["", "Paired per-user HR@10 differences (points, mean ± 95% half-width):", "",
                  "| arm | DCCL-e − f (same round) | DCCL-m − reference arm |", "|---|---|---|"]
        fmt = lambda d: f"{100 * d['delta']:+.2f} ± {100 * d['ci95']:.2f}" if d else ""
        for n, p in pairs.items():
            ref = (f"{fmt(p['vs_ref'])} (vs {p['ref']})" if "vs_ref" in p
                   else p.get("unpaired", "reference" if "ref" in p else ""))
            lines.append(f"| {n} | {fmt(p['e_minus_f'])} | {ref} |")
    return "\n".join(lines) + "\n"


def save(rows: dict[str, Any], out: Path, name: str, title: str, meta: dict[str, Any],
         merge: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    if merge and path.exists():
        rows = {**json.loads(path.read_text())["rows"], **rows}
    atomic_write(path, dumps({"meta": meta, "rows": rows}))
    atomic_write(out / f"{name}.md", markdown(rows, title))
    print(markdown(rows, title))


def variants(base: dict[str, Any], out: Path, key: str, values: list[str],
             ref: str | None = None) -> dict[str, Any]:
    """DCCL with ``key`` set to each value (the pre-trained f is shared where it can be),
    with paired HR@10 differences against the arm ``ref`` (default: the first)."""
    rows: dict[str, Any] = {}
    ref = values[0] if ref is None or ref not in values else ref
    for v in values:
        r = run_dccl({**base, key: v}, out / f"{key}-{v}")
        rows[f"{key}={v}"] = {**r["DCCL-m"], "e": r["DCCL-e"], "f": r["f (pre-trained)"],
                              "rounds": r["rounds"]}
        log(f"{key}={v}: DCCL-m {r['DCCL-m']}")
    for v in values:
        rows[f"{key}={v}"]["paired"] = {"ref": f"{key}={ref}", **paired(
            out / f"{key}-{v}", out / f"{key}-{ref}" if v != ref else None)}
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.dccl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=["table2", "table4", "rounds", "sweep", "fig4"])
    p.add_argument("what", nargs="?", help="sweep: a dccl option, e.g. meta-dim or beta")
    p.add_argument("--run-config", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--values", default="", help="comma-separated values (rounds, sweep)")
    p.add_argument("--rows", default="dccl,din,mf,neumf,sasrec", help="table2 rows")
    p.add_argument("--epochs", type=int, default=5, help="epochs of MF/NeuMF/SASRec")
    p.add_argument("--out", default="runs/dccl")
    p.add_argument("--ref", default=None, help="sweep: the reference arm (default: the first)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 beside other jobs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    base = {**read_run_config(args.run_config), **parse_sets(args.set), "quiet": True}
    out = Path(args.out) / Path(args.run_config).stem
    meta = {"run_config": args.run_config, "base": base, "started": time.strftime("%FT%T")}
    values = [v for v in args.values.split(",") if v]
    if args.experiment == "table2":
        rows = tuple(args.rows.split(","))
        save(table2(base, out, rows, args.epochs), out, "table2", "Table 2", meta, merge=True)
    elif args.experiment == "table4":
        rows = variants(base, out, "dccl-junctions", ["1", "2", "3", "1,2,3"], ref="1,2,3")
        save(rows, out, "table4", "Table 4: one junction at a time", meta)
        plot_sweep(rows, out / "table4.png", f"patched junctions ({out.name})")
    elif args.experiment == "rounds":
        rows = variants(base, out, "num-rounds", values or ["1", "2", "4"])
        save(rows, out, "rounds", "Fig. 5: rounds over the DCCL half", meta)
        plot_rounds(rows, out / "rounds.png", f"DCCL-m per round ({out.name})")
    elif args.experiment == "fig4":
        groups = group_auc(out / "dccl" / "dccl_devices.csv")
        atomic_write(out / "fig4.json", dumps({"meta": meta, "groups": groups}))
        plot_groups(groups, out / "fig4.png", f"macro-AUC by activity group ({out.name})")
        print(json.dumps(groups))
    else:
        if not args.what or not values:
            raise SystemExit("sweep needs an option (e.g. meta-dim, beta) and --values")
        rows = variants(base, out, f"dccl-{args.what}", values, ref=args.ref)
        save(rows, out, f"sweep_{args.what}", f"sweep of dccl-{args.what}", meta)
        plot_sweep(rows, out / f"sweep_{args.what}.png", f"dccl-{args.what} ({out.name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
