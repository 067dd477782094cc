"""MC-SF's experiments (docs/mcsf.md): Tables 2-3, the ablation (Fig. 4), the sensitivity
(Fig. 5), on the paper's split of a run config's dataset, centralised as in the paper.

    python -m experiments.mcsf tables --run-config experiments/mcsf_steam.toml --seeds 0,1,2
    python -m experiments.mcsf ablation --run-config experiments/mcsf_ml1m.toml
    python -m experiments.mcsf sensitivity --run-config experiments/mcsf_ml1m.toml --what dim

Each writes ``<out>/<config stem>/<experiment>/results.json`` (per model and seed: HR@1/5/10,
NDCG@5/10, MRR of the target among its 1 + 100 candidates; with ``--full-ranking`` also
"full HR@10", "full NDCG@10", "full MRR" of the target among every item, the device's slow-
and fast-phase items excluded), ``table.md`` and a figure.
Slow models (SASRec, DIN, MC-SF slow) are scored from the cloud's delayed sequence (the slow
phase) and the last negative-memory upload; fast models from every click and exposure
before the target.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from experiments.run import parse_sets, read_run_config
from fedrec.dccl.central import ranks_summary
from fedrec.errors import ConfigError
from fedrec.mcsf.central import FAST_MODELS, SLOW_MODELS, CentralOptions, Pipeline
from fedrec.results import atomic_write, dumps

METRICS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")
#: with --full-ranking: the target among every item, the device's seen items excluded
FULL_METRICS = ("HR@10", "NDCG@10", "MRR")
LABELS = {"sasrec": "SASRec", "din": "DIN", "mcsf-slow": "MC-SF slow", "neumf": "NeuMF",
          "gru4rec": "GRU4Rec", "din+neumf": "DIN+NeuMF", "din+gru4rec": "DIN+GRU4Rec",
          "fast": "MC-SF fast w/o S2F", "mcsf-fast": "MC-SF fast",
          "fast-tuned": "MC-SF fast w/o S2F, tuned E", "mcsf-fast-tuned": "MC-SF fast, tuned E"}
#: Fig. 4: DIN, w/ F2S (both the slow protocol), the fast model w/o and w/ S2F (fast protocol)
ABLATION = ("din", "mcsf-slow", "fast", "mcsf-fast")
ABLATION_TITLE = "DIN, w/ F2S (slow protocol) | fast w/o S2F, w/ S2F (fast protocol)"
SWEEPS = {"dim": ("mcsf-dim", (4, 8, 16, 32, 64)),
          "l2": ("mcsf-l2", (1e-6, 1e-5, 1e-4, 1e-3, 1e-2))}


def log(msg: str) -> None:
    print(f"[mcsf {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_once(base: dict[str, Any], models: tuple[str, ...], central: CentralOptions,
             verbose: bool) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Train ``models`` once; -> (metrics per model, facts)."""
    import torch

    from experiments.setup import effective_config, resolve

    torch.set_num_threads(1)
    cfg, cls = resolve(effective_config({}, {**base, "strategy": "mcsf"}))
    view = cls.prepare_data(cfg)
    t0 = time.monotonic()
    pipe = Pipeline(view, cfg.protocol, central, say=log if verbose else None)
    ranks = pipe.run(models)
    out = {m: {k: float(ranks_summary(r)[k]) for k in METRICS} for m, r in ranks.items()}
    for m, r in pipe.full.items():
        out[m].update({f"full {k}": float(ranks_summary(r)[k]) for k in FULL_METRICS})
    facts = {**pipe.facts, "wall_s": time.monotonic() - t0}
    return out, facts


def mean_sd(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and standard deviation over seeds of every metric of every model."""
    first = per_seed[0]
    return {m: {k: (float(np.mean([s[m][k] for s in per_seed])),
                    float(np.std([s[m][k] for s in per_seed])))
                for k in first[m]} for m in first}


def table(stats: dict[str, dict[str, tuple[float, float]]], groups: list[tuple[str, tuple[str, ...]]]
          ) -> str:
    """Markdown tables, one per group, with the relative NDCG@5 gain of the best model over
    the second best (the paper's "Improv.")."""
    lines = []
    for title, models in groups:
        present = [m for m in models if m in stats]
        if not present:
            continue
        keys = [k for k in stats[present[0]] if k in METRICS or k.startswith("full ")]
        lines += [f"**{title}**", "", "| model | " + " | ".join(keys) + " |",
                  "|---|" + "---|" * len(keys)]
        for m in present:
            cells = [f"{stats[m][k][0]:.4f} ± {stats[m][k][1]:.4f}" for k in keys]
            lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
        ranked = sorted(present, key=lambda m: -stats[m]["NDCG@5"][0])
        if len(ranked) > 1:
            a, b = stats[ranked[0]]["NDCG@5"][0], stats[ranked[1]]["NDCG@5"][0]
            lines.append(f"\nBest NDCG@5: {LABELS.get(ranked[0])} {a:.4f}, second "
                         f"{LABELS.get(ranked[1])} {b:.4f}: {100 * (a / b - 1):+.2f}%")
        lines.append("")
    return "\n".join(lines)


def seeds_run(base: dict[str, Any], models: tuple[str, ...], central: CentralOptions,
              seeds: list[int], verbose: bool) -> tuple[list[dict], list[dict]]:
    results, facts = [], []
    for s in seeds:
        log(f"seed {s}: {', '.join(models)}")
        r, f = run_once({**base, "seed": s}, models, replace(central, seed=s), verbose)
        results.append(r)
        facts.append(f)
        log(f"seed {s} done in {f['wall_s']:.0f} s: " + ", ".join(
            f"{m} {v['NDCG@5']:.4f}" for m, v in r.items()))
    return results, facts


def bar_plot(stats: dict[str, dict[str, tuple[float, float]]], models: tuple[str, ...],
             path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, k in zip(axes, ("HR@5", "NDCG@5"), strict=True):
        vals = [stats[m][k][0] for m in models]
        errs = [stats[m][k][1] for m in models]
        ax.bar(range(len(models)), vals, yerr=errs, color=["#999", "#69c", "#dca", "#c63"][:len(models)])
        ax.set_xticks(range(len(models)), [LABELS.get(m, m) for m in models], rotation=15,
                      fontsize=8)
        ax.set_title(k)
        lo = min(vals) * 0.9
        ax.set_ylim(lo, max(vals) * 1.05)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def line_plot(xs: list[float], stats: list[dict[str, dict[str, tuple[float, float]]]],
              models: tuple[str, ...], key: str, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, k in zip(axes, ("HR@5", "NDCG@5"), strict=True):
        for m in models:
            ax.plot(range(len(xs)), [s[m][k][0] for s in stats], marker="o", label=LABELS[m])
        ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
        ax.set_xlabel(key)
        ax.set_title(k)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def replot(path: Path) -> int:
    """Draw the ablation figure of a saved tables/ablation run beside its results.json."""
    saved = json.loads(path.read_text())
    stats = mean_sd(saved["results"])
    models = ABLATION
    if not set(models) <= set(stats):
        raise SystemExit(f"{path} has no {', '.join(models)} results to draw")
    stem = path.parent.parent.name
    bar_plot(stats, models, path.parent / "ablation.png", f"{stem}: {ABLATION_TITLE}")
    log(f"wrote {path.parent / 'ablation.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.mcsf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=["tables", "ablation", "sensitivity", "plot"])
    p.add_argument("--run-config", help="tables, ablation, sensitivity: the run config")
    p.add_argument("--results", help="plot: a tables/ablation results.json to draw again")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (the paper: 3 runs)")
    p.add_argument("--models", default="", help="tables: comma-separated subset")
    p.add_argument("--what", choices=sorted(SWEEPS), default="dim", help="sensitivity: the swept option")
    p.add_argument("--fast-epochs", type=int, default=20)
    p.add_argument("--fast-pretrain", type=int, default=5)
    p.add_argument("--full-ranking", action="store_true",
                   help="also rank each test target among every item (seen items excluded)")
    p.add_argument("--full-devices", type=int, default=0,
                   help="with --full-ranking: only the first N devices' test events (0: all)")
    p.add_argument("--out", default="runs/mcsf")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.experiment == "plot":
        return replot(Path(args.results))
    if not args.run_config:
        p.error("--run-config is required")
    base = {**read_run_config(args.run_config), **parse_sets(args.set), "quiet": True}
    stem = Path(args.run_config).stem
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    try:
        central = CentralOptions(fast_pretrain=args.fast_pretrain, fast_epochs=args.fast_epochs,
                                 full_ranking=args.full_ranking, full_devices=args.full_devices)
    except ConfigError as exc:
        p.error(str(exc))
    out = Path(args.out) / stem / (args.experiment if args.experiment != "sensitivity"
                                   else f"sensitivity-{args.what}")
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m experiments.mcsf " + " ".join(argv or sys.argv[1:])
    if args.experiment in ("tables", "ablation"):
        models = (tuple(args.models.split(",")) if args.models else SLOW_MODELS + FAST_MODELS) \
            if args.experiment == "tables" else ABLATION
        results, facts = seeds_run(base, models, central, seeds, args.verbose)
        stats = mean_sd(results)
        groups = ([("Cloud side (slow protocol)", SLOW_MODELS),
                   ("Mobile side (fast protocol)", FAST_MODELS)]
                  if args.experiment == "tables" else [("Ablation", models)])
        md = table(stats, groups)
        if set(ABLATION) <= set(stats):
            bar_plot(stats, ABLATION, out / "ablation.png", f"{stem}: {ABLATION_TITLE}")
    else:
        key, values = SWEEPS[args.what]
        results, facts, per_value = [], [], []
        for v in values:
            r, f = seeds_run({**base, key: v}, ("din", "mcsf-slow", "mcsf-fast"), central, seeds,
                             args.verbose)
            results.append(r)
            facts.append(f)
            per_value.append(mean_sd(r))
        line_plot(list(values), per_value, ("din", "mcsf-slow", "mcsf-fast"), key,
                  out / f"sensitivity_{args.what}.png", f"{stem}: {key}")
        md = "\n".join([f"| {key} | model | HR@5 | NDCG@5 |", "|---|---|---|---|"]
                       + [f"| {v:g} | {LABELS[m]} | {s[m]['HR@5'][0]:.4f} | {s[m]['NDCG@5'][0]:.4f} |"
                          for v, s in zip(values, per_value, strict=True) for m in s])
        stats = {}
    payload = {"command": command, "config": base, "seeds": seeds, "central": vars(central),
               "results": results, "facts": facts, "mean_sd": stats}
    atomic_write(out / "results.json", dumps(payload))
    atomic_write(out / "table.md", f"`{command}`\n\n{md}\n")
    print(md)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

