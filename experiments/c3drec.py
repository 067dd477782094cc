"""C3DRec experiments (Han & Ma 2021): Table 2, Figs. 7 and 10-12, Tables 3-4, one command each.

Usage::

    python -m experiments.c3drec table2 --run-config experiments/c3drec_taobao.toml
    python -m experiments.c3drec sweep emb   --run-config ... [--values 0,0.5,0.9,0.99]
    python -m experiments.c3drec sweep model --run-config ... [--values 0,0.5,0.8,0.9,0.95]
    python -m experiments.c3drec sweep cand  --run-config ... [--values 0.01,0.05,0.1,0.2,0.5]
    python -m experiments.c3drec sweep tdevice --run-config ... [--values <unix s or fractions>]
    python -m experiments.c3drec costs --run-config ...

C3DRec rows run the real protocol objects (``strategies.c3drec_pull/push`` and the device
logic, messages as Flower would carry them but through the round driver in this process:
same numbers as ``flwr run``, see tests/strategies/test_c3drec_e2e.py) and charge every
device its costs with the engine's device host on a Pixel 2 (the paper's phone). Baselines run
``fedrec.c3drec.baselines`` on the same timeline. Scores are event-level (micro) Recall@20 /
MRR@20 as in the paper, over each user's candidate set ("cand") and over all items ("all").
Results: ``<out>/<dataset>/<experiment>.json`` + ``.md`` + ``.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.c3drec_plots import plot_bars, plot_sweep
from experiments.plain_loop import run_in_process
from experiments.run import parse_sets, read_run_config
from experiments.setup import effective_config, resolve
from fedrec import devices as dev
from fedrec.c3drec import baselines as B
from fedrec.c3drec.config import C3DRecConfig
from fedrec.c3drec.pipeline import candidates, pretrain_global
from fedrec.config import protocol_options
from fedrec.payload import nbytes
from fedrec.protocol import EVALUATE, FIT, DeviceReply
from fedrec.results import atomic_write, dumps
from strategies.messages import read_reply

PLAIN = {"c3drec-model-sparsity": 0.0, "c3drec-emb-sparsity": 0.0, "c3drec-gamma": 0.0,
         "c3drec-lasso": 0.0}
DEFAULT_VALUES = {"emb": [0.0, 0.5, 0.9, 0.99], "model": [0.0, 0.5, 0.8, 0.9, 0.95],
                  "cand": [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]}


# --------------------------------------------------------------------------- the protocol
def run_protocol(flat: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """All rounds of a C3DRec strategy through the round driver in this process (every device
    on a Pixel 2); scores, costs and cloud facts from the devices' own replies."""
    t0 = time.perf_counter()
    run = run_in_process(flat, run_dir, profile_of=lambda d: dev.TIERS["pixel2"], record=True)
    replies = replies_by_phase(run.transport.seen)
    last = run.cfg.train.num_rounds
    costs = [r.costs for (_, kind), reps in sorted(replies.items()) if kind == FIT
             for r in reps if r.num_examples > 0 or r.upload]
    fit, ev = replies[last, FIT], replies[last, EVALUATE]
    cloud = json.loads((run_dir / "c3drec_cloud.json").read_text())
    return {"scores": micro_of(ev), "costs": cost_summary(costs, cloud, fit),
            "cloud": cloud, "wall_s": {"cloud": run.cloud_s, "total": time.perf_counter() - t0}}


def replies_by_phase(seen: list) -> dict[tuple[int, str], list[DeviceReply]]:
    """(round, phase kind) -> every device's decoded reply, sorted by device id."""
    out: dict[tuple[int, str], list[DeviceReply]] = {}
    for rnd, kind, _, _, reply in seen:
        out.setdefault((rnd, kind), []).extend(read_reply(reply)[0])
    return {k: sorted(v, key=lambda r: r.device_id) for k, v in out.items()}


def micro_of(replies: list[DeviceReply]) -> dict[str, float]:
    return B.micro([r.metrics for r in replies if r.status == "ok" and r.metrics])


def cost_summary(costs: list[dict[str, float]], cloud: dict[str, Any],
                 fit: list[DeviceReply]) -> dict[str, float]:
    """Per-device means (devices that trained or uploaded) of the engine's cost fields."""
    mean = {k: float(np.mean([c[k] for c in costs])) for k in costs[0]} if costs else {}
    ups = [nbytes(r.upload) for r in fit if r.upload]
    return {**mean, "model_bytes_wire": cloud["model_bytes_wire"],
            "model_bytes_dense": cloud["model_bytes_by_encoding"]["dense"],
            "upload_bytes_per_uploader": float(np.mean(ups)) if ups else 0.0,
            "candidate_bytes": max(mean.get("bytes_down", 0.0) - cloud["model_bytes_wire"], 0.0)}


# --------------------------------------------------------------------------- experiments
def setup(base: dict[str, Any]) -> tuple[Any, Any, Any, list[np.ndarray]]:
    """(run config, timeline, C3DRec options, candidate sets) of the baselines' runs."""
    cfg, cls = resolve(effective_config({}, {**base, "strategy": "c3drec-pull"}))
    data = cls.prepare_data(cfg)
    c3 = protocol_options(cfg, C3DRecConfig)
    return cfg, data, c3, candidates(data, c3)


ROWS = ("pull", "push", "plain", "global", "gp", "personal")


def table2(base: dict[str, Any], out: Path, personal_epochs: int,
           only: tuple[str, ...] = ROWS) -> dict[str, Any]:
    """Table 2: both C3DRec modes, C3DRec without compression, and the three baselines
    (``only``: the row tags to compute)."""
    rows: dict[str, Any] = {}
    for name, tag, extra in (("C3DRec pull", "pull", {"strategy": "c3drec-pull"}),
                             ("C3DRec push", "push", {"strategy": "c3drec-push"}),
                             ("C3DRec (no AGP, no emb. sparsity)", "plain",
                              {"strategy": "c3drec-pull", **PLAIN})):
        if tag in only:
            rows[name] = run_protocol({**base, **extra}, out / f"table2_{tag}")
            log(name, rows[name]["scores"])
    if not {"global", "gp", "personal"} & set(only):
        return rows
    cfg, data, c3, cands = setup({**base, **PLAIN})
    seed, epochs = cfg.train.seed, cfg.train.local_epochs * cfg.train.num_rounds
    if {"global", "gp"} & set(only):
        t0 = time.perf_counter()
        g, scores = B.only_global(data, cands, c3, seed)
        rows["Only Global (GRU4Rec)"] = timed(scores, t0)
        if "gp" in only:
            t0 = time.perf_counter()
            rows["Global + Personal"] = timed(B.personal_pass(data, g, cands, c3, seed, epochs), t0)
    if "personal" in only:
        t0 = time.perf_counter()
        rows["Only Personal"] = timed(B.only_personal(data, cands, c3, seed, personal_epochs), t0)
    return rows


def timed(per_device: list[dict[str, float]], t0: float) -> dict[str, Any]:
    row = {"scores": B.micro(per_device), "wall_s": time.perf_counter() - t0}
    return row


def sweep(base: dict[str, Any], what: str, values: list[float], out: Path) -> dict[str, Any]:
    """Accuracy (and costs) against one knob; ``cand`` re-scores one trained pull run."""
    if what == "cand":
        return sweep_candidates(base, values)
    key = {"emb": "c3drec-emb-sparsity", "model": "c3drec-model-sparsity"}.get(what)
    modes = ("pull", "push") if what == "emb" else ("pull",)
    rows: dict[str, Any] = {}
    for mode in modes:
        for v in values:
            extra = {key: v} if key else tdevice_keys(base, v)
            name = f"{mode} {v:g}"
            rows[name] = run_protocol({**base, **extra, "strategy": f"c3drec-{mode}"},
                                      out / f"sweep_{what}_{mode}_{v:g}")
            rows[name].update(mode=mode, value=v)
            log(name, rows[name]["scores"])
    return rows


def tdevice_keys(base: dict[str, Any], v: float) -> dict[str, Any]:
    """T_device for a sweep point: a unix time for timed data, a device fraction otherwise."""
    return {"c3drec-t-device": int(v)} if v > 1 else {"c3drec-device-frac": float(v)}


def sweep_candidates(base: dict[str, Any], values: list[float]) -> dict[str, Any]:
    """Fig. 12: one pull-mode global model and personal models, scored against candidate sets
    of every size (the personal step does not depend on the candidates)."""
    cfg, data, c3, _ = setup(base)
    g = pretrain_global(data.cloud_pre.all(), data.n_items, c3, "pull", cfg.train.seed)
    rows: dict[str, Any] = {}
    epochs = cfg.train.local_epochs * cfg.train.num_rounds
    for v in values:
        c = replace(c3, candidate_proportion=v)
        t0 = time.perf_counter()
        rows[f"pull {v:g}"] = {**timed(B.personal_pass(data, g, candidates(data, c), c,
                                                      cfg.train.seed, epochs), t0),
                               "mode": "pull", "value": v}
        log(f"candidates {v:g}", rows[f"pull {v:g}"]["scores"])
    return rows


def log(name: str, scores: dict[str, float]) -> None:
    keys = ("recall@20", "mrr@20", "all_recall@20", "all_mrr@20")
    print(f"{name}: {({k: round(scores[k], 4) for k in keys if k in scores})}", flush=True)


# --------------------------------------------------------------------------- output
TABLE2_ORDER = ("Global + Personal", "C3DRec pull", "C3DRec push",
                "C3DRec (no AGP, no emb. sparsity)", "Only Global (GRU4Rec)", "Only Personal")


def ordered(rows: dict[str, Any]) -> dict[str, Any]:
    """Table 2 rows in the paper's order; sweep points by (mode, value)."""
    known = [n for n in TABLE2_ORDER if n in rows]
    rest = sorted((n for n in rows if n not in known),
                  key=lambda n: (rows[n].get("mode", ""), rows[n].get("value", 0.0), n))
    return {n: rows[n] for n in known + rest}


def markdown(rows: dict[str, Any], title: str) -> str:
    """A results table: micro Recall/MRR@20 over candidates and all items, old/new users."""
    cols = ["recall@20", "mrr@20", "all_recall@20", "all_mrr@20", "old_recall@20",
            "new_recall@20", "old_all_recall@20", "new_all_recall@20"]
    head = ["approach", "Recall@20 cand", "MRR@20 cand", "Recall@20 all", "MRR@20 all",
            "old R@20 cand", "new R@20 cand", "old R@20 all", "new R@20 all"]
    lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in ordered(rows).items():
        s = row["scores"]
        lines.append("| " + " | ".join([name] + [f"{s[c]:.4f}" if c in s else "-" for c in cols])
                     + " |")
    return "\n".join(lines) + "\n"


def cost_markdown(rows: dict[str, Any]) -> str:
    """Tables 3-4: per-device costs of the rows that ran the protocol (Pixel 2 profile)."""
    head = ["run", "model down (wire)", "model dense", "candidates down", "upload",
            "train time (s, Pixel 2)", "memory (MB)", "Recall@20 cand"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in ordered(rows).items():
        c = row.get("costs")
        if not c:
            continue
        lines.append(f"| {name} | {kb(c['model_bytes_wire'])} | {kb(c['model_bytes_dense'])} | "
                     f"{kb(c['candidate_bytes'])} | {kb(c['upload_bytes_per_uploader'])} | "
                     f"{c.get('compute_s', 0):.3g} | {c.get('peak_mem_bytes', 0) / 2**20:.1f} | "
                     f"{row['scores'].get('recall@20', float('nan')):.4f} |")
    return "\n".join(lines) + "\n"


def kb(n: float) -> str:
    return f"{n / 1024:.1f} KB" if n < 2**20 else f"{n / 2**20:.2f} MB"


def save(rows: dict[str, Any], out: Path, name: str, title: str, meta: dict[str, Any],
         merge: bool = False) -> None:
    """Write json/md/png; ``merge``: update the rows of an existing result (order kept)."""
    out.mkdir(parents=True, exist_ok=True)
    if merge and (out / f"{name}.json").is_file():
        old = json.loads((out / f"{name}.json").read_text())
        rows = {**old["rows"], **rows}
        meta = {**meta, "merged_into": old["meta"]}
    atomic_write(out / f"{name}.json", dumps({"meta": meta, "rows": rows}))
    text = markdown(rows, title) + "\n" + cost_markdown(rows)
    atomic_write(out / f"{name}.md", text)
    if name.startswith("sweep"):
        plot_sweep(rows, out / f"{name}.png", title)
    else:
        plot_bars(ordered(rows), out / f"{name}.png", title)
    print(text)


# --------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.c3drec", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=["table2", "sweep", "costs"])
    p.add_argument("what", nargs="?", choices=["emb", "model", "cand", "tdevice"])
    p.add_argument("--run-config", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--values", default="", help="comma-separated sweep values")
    p.add_argument("--personal-epochs", type=int, default=10, help="Only Personal's epochs")
    p.add_argument("--out", default="runs/c3drec")
    p.add_argument("--rows", default=",".join(ROWS),
                   help=f"table2 rows to compute ({','.join(ROWS)}); merged into an existing "
                        "table2.json")
    return p.parse_args(argv)


def rewrite(out: Path, name: str, title: str) -> None:
    """Re-render ``<name>.md``/``.png`` from ``<name>.json`` (after a format change)."""
    rows = json.loads((out / f"{name}.json").read_text())["rows"]
    atomic_write(out / f"{name}.md", markdown(rows, title) + "\n" + cost_markdown(rows))
    (plot_sweep if name.startswith("sweep") else plot_bars)(ordered(rows), out / f"{name}.png",
                                                            title)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    base = {**read_run_config(args.run_config), **parse_sets(args.set), "quiet": True}
    out = Path(args.out) / Path(args.run_config).stem
    meta = {"run_config": args.run_config, "base": base, "started": time.strftime("%FT%T")}
    if args.experiment == "table2":
        only = tuple(args.rows.split(","))
        save(table2(base, out, args.personal_epochs, only), out, "table2", "Table 2", meta,
             merge=set(only) != set(ROWS))
    elif args.experiment == "costs":
        rows = {}
        for mode in ("pull", "push"):
            for name, extra in (("C3DRec", {}), ("w/o AGP", {"c3drec-model-sparsity": 0.0}),
                                ("w/o emb. sparsity", {"c3drec-emb-sparsity": 0.0,
                                                       "c3drec-gamma": 0.0, "c3drec-lasso": 0.0})):
                key = f"{mode}: {name}"
                tag = name.replace(" ", "").replace("/", "")
                rows[key] = run_protocol({**base, **extra, "strategy": f"c3drec-{mode}"},
                                         out / f"costs_{mode}_{tag}")
                log(key, rows[key]["scores"])
        save(rows, out, "costs", "Tables 3-4 (costs per device)", meta)
    else:
        if args.what is None:
            raise SystemExit("sweep needs one of: emb, model, cand, tdevice")
        values = ([float(v) for v in args.values.split(",")] if args.values
                  else DEFAULT_VALUES.get(args.what))
        if values is None:
            raise SystemExit("sweep tdevice needs --values (unix times, or fractions for ML-1M)")
        save(sweep(base, args.what, values, out), out, f"sweep_{args.what}",
             f"accuracy vs {args.what}", meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
