"""CoDA's experiments (Gu et al.; docs/coda.md): one command each, results as json +
markdown + png under ``--out/<run-config stem>/``.

    python -m experiments.coda arms --run-config experiments/coda_taobao.toml
    python -m experiments.coda ablations --run-config experiments/coda_taobao.toml
    python -m experiments.coda sweep sigma --run-config ... --values 0,0.05,0.2,0.5
    python -m experiments.coda sweep k --run-config ... --values 10,100,300
    python -m experiments.coda global --run-config ... [--set coda-dim=8]   (M0 alone)

Protocol (offline; the paper has only online A/B numbers): one round = one simulated day d;
each device is scored on its own day-d samples (every click plus its simulated exposures)
with the model it serves that day. Active devices: local samples from the 7 days before d
and at least one click on day d (the same set in every arm). Metrics per day: per-user AUC
averaged over users (GAUC), overall AUC (binned), log-loss, and the CTR proxy: clicks among
the top ``coda-ctr-k`` of each device's day-d samples, summed over devices. "Accumulated"
sums clicks and shown over all days (as Tables 3-4). The Cloud arm is the global model M0
scored on the same devices in every run (``cloud_`` metrics); Local and CoDA are runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments.plain_loop import run_in_process
from experiments.run import parse_sets, read_run_config
from fedrec.results import atomic_write, dumps

METRICS = ("gauc", "auc", "logloss", "ctr@k")


def log(msg: str) -> None:
    print(f"[coda {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_arm(base: dict[str, Any], name: str, sets: dict[str, Any], out: Path) -> list[dict]:
    """One run through the plain loop (same numbers as Flower: tests/coda/test_protocol.py)."""
    t0 = time.monotonic()
    res = run_in_process({**base, **sets, "output-dir": str(out), "run-name": name}, out / name)
    recs = res.strategy.log.records
    log(f"{name}: {len(recs)} days in {time.monotonic() - t0:.0f} s, "
        f"GAUC {np.mean([r['test_gauc'] for r in recs]):.4f}")
    return recs


def daily(recs: list[dict], prefix: str) -> dict[str, list[float]]:
    return {m: [float(r[f"test_{prefix}{m}"]) for r in recs] for m in METRICS}


def accumulated(recs: list[dict], prefix: str) -> dict[str, float]:
    """Means over days of GAUC / AUC / log-loss; CTR summed over days (clicks / shown)."""
    out = {m: float(np.mean([r[f"test_{prefix}{m}"] for r in recs])) for m in METRICS[:3]}
    out["ctr@k"] = (sum(r[f"day_{prefix}top_clicks"] for r in recs)
                    / max(sum(r[f"day_{prefix}top_shown"] for r in recs), 1.0))
    return out


def day_rows(run_dir: Path) -> dict[tuple[int, int], dict[str, float]]:
    """coda_days.csv: (device, day) -> its columns."""
    import csv

    with (run_dir / "coda_days.csv").open() as fh:
        return {(int(r["device_id"]), int(r["day"])): {k: float(v) for k, v in r.items()}
                for r in csv.DictReader(fh)}


def paired(a: dict, b: dict, col_a: str, col_b: str) -> dict[str, float]:
    """Paired lifts of a over b on their common device-days: CTR (top-k clicks summed) and
    GAUC (per-device AUC), each as % of b with a 95% half-width (1.96 standard errors of the
    per device-day differences)."""
    keys = sorted(set(a) & set(b))
    ta = np.array([a[k][f"{col_a}top_clicks"] for k in keys])
    tb = np.array([b[k][f"{col_b}top_clicks"] for k in keys])
    d = ta - tb
    out = {"pairs": float(len(keys)),
           "ctr_lift_pct": 100 * d.sum() / tb.sum(),
           "ctr_ci_pct": 100 * 1.96 * d.std(ddof=1) * np.sqrt(len(d)) / tb.sum()}
    ua = np.array([a[k][f"{col_a}auc"] for k in keys])
    ub = np.array([b[k][f"{col_b}auc"] for k in keys])
    ok = np.isfinite(ua) & np.isfinite(ub)
    du = ua[ok] - ub[ok]
    out.update({"gauc_lift_pct": 100 * du.mean() / ub[ok].mean(),
                "gauc_ci_pct": 100 * 1.96 * du.std(ddof=1) / np.sqrt(len(du)) / ub[ok].mean()})
    return out


def lift(a: float, b: float, lower_better: bool = False) -> float:
    """Relative change of a over b in percent (log-loss: a reduction is positive)."""
    return 100.0 * ((b - a) if lower_better else (a - b)) / b


def table(rows: dict[str, dict[str, float]], ref: dict[str, str]) -> str:
    """Markdown: each arm's accumulated metrics, then lifts vs the references."""
    head = "| arm | " + " | ".join(METRICS) + " | " + " | ".join(
        f"{m} vs {r}" for r in ref for m in ("GAUC", "CTR")) + " |"
    lines = [head, "|" + "---|" * (1 + len(METRICS) + 2 * len(ref))]
    for name, acc in rows.items():
        cells = [f"{acc[m]:.4f}" for m in METRICS]
        for r in ref:
            if r == name:
                cells += ["-", "-"]
            else:
                cells += [f"{lift(acc['gauc'], rows[r]['gauc']):+.2f}%",
                          f"{lift(acc['ctr@k'], rows[r]['ctr@k']):+.2f}%"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_days(days: list[int], lines: dict[str, dict[str, list[float]]], path: Path,
              title: str) -> None:
    """Figs. 9-10's analogue: each arm's daily CTR proxy and GAUC (top) and their lift over
    the Cloud arm on the same devices (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["cloud", *sorted(n for n in lines if n != "cloud")]
    color = {n: f"C{i}" for i, n in enumerate(names)}
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), sharex=True)
    for col, (m, label) in enumerate((("ctr@k", "CTR proxy (clicks in top-k)"), ("gauc", "GAUC"))):
        for name in names:
            v = lines[name]
            axes[0, col].plot(days, v[m], marker="o", label=name, color=color[name])
            if name != "cloud":
                axes[1, col].plot(days, [lift(a, b) for a, b in zip(v[m], lines["cloud"][m],
                                                                      strict=True)],
                                  marker="o", label=name, color=color[name])
        axes[0, col].set_title(label)
        axes[1, col].set_title(f"{label}: lift vs Cloud (%)")
        axes[1, col].axhline(0.0, color="grey", lw=0.8)
        axes[1, col].set_xlabel("simulated day")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def replot(result: Path, title: str) -> None:
    """Redraw ``days.png`` beside a ``result.json``."""
    r = json.loads(result.read_text())
    plot_days(r["days"], r["daily"], result.parent / "days.png", title)


def arms(base: dict[str, Any], out: Path, stem: str, extra: dict[str, dict[str, Any]],
         local: bool = True) -> dict:
    """Cloud (M0 on the CoDA run's devices), Local and CoDA, plus any ``extra`` CoDA variants."""
    runs = {"coda": run_arm(base, "coda", {"coda-arm": "coda"}, out)}
    if local:
        runs["local"] = run_arm(base, "local", {"coda-arm": "local"}, out)
    for name, sets in extra.items():
        runs[name] = run_arm(base, name, {"coda-arm": "coda", **sets}, out)
    rows = {"cloud": accumulated(runs["coda"], "cloud_")}
    rows.update({name: accumulated(recs, "") for name, recs in runs.items()})
    days = [int(r["day"]) for r in runs["coda"]]
    lines = {"cloud": daily(runs["coda"], "cloud_"),
             **{name: daily(recs, "") for name, recs in runs.items()}}
    per_day = {name: {m: [lift(a, b) for a, b in zip(v[m], lines["cloud"][m], strict=True)]
                      for m in ("gauc", "ctr@k")} for name, v in lines.items() if name != "cloud"}
    costs = {name: {k: float(np.mean([r.get(f"agg_{k}", 0.0) for r in recs]))
                    for k in ("received_mean", "kept_mean", "dropped_mean", "bytes_matched_mean",
                              "accepted_steps_mean", "rejected_steps_mean", "rollbacks",
                              "train_s_per_device", "filter_s_per_device")}
             for name, recs in runs.items()}
    active = [int(r["active_devices"]) for r in runs["coda"]]
    rows_of = {name: day_rows(out / name) for name in runs}
    pairs = {name: {"vs_cloud": paired(rows_of[name], rows_of[name], "", "cloud_"),
                    **({"vs_local": paired(rows_of[name], rows_of["local"], "", "")}
                       if "local" in runs and name != "local" else {})}
             for name in runs}
    result = {"days": days, "active_devices": active, "accumulated": rows, "daily": lines,
              "daily_lift_vs_cloud_pct": per_day, "paired": pairs, "costs": costs}
    atomic_write(out / "result.json", dumps(result))
    md = [f"# CoDA arms: {stem}", "", (f"days {days[0]}..{days[-1]}, active devices per day "
                                       f"{active}"), "", table(rows, {r: "" for r in ("cloud", "local") if r in rows}), "",
          "Paired lifts over the same device-days (% of the reference, 95% half-width):", "",
          "| arm | CTR vs Cloud | GAUC vs Cloud | CTR vs Local | GAUC vs Local |",
          "|---|---|---|---|---|",
          *(f"| {name} | " + " | ".join(
              f"{p[ref][m + '_lift_pct']:+.2f} ± {p[ref][m + '_ci_pct']:.2f}" if ref in p else "-"
              for ref in ("vs_cloud", "vs_local") for m in ("ctr", "gauc")) + " |"
            for name, p in pairs.items()), "",
          "Daily CTR lift vs Cloud (%): " + ", ".join(
              f"{name} " + " ".join(f"{x:+.2f}" for x in v["ctr@k"]) for name, v in per_day.items())]
    atomic_write(out / "table.md", "\n".join(md) + "\n")
    plot_days(days, lines, out / "days.png", f"CoDA arms, {stem}")
    log(f"wrote {out / 'table.md'}, {out / 'days.png'}")
    print("\n".join(md))
    return result


def global_model(base: dict[str, Any], out: Path) -> dict[str, float]:
    """M0 alone: train the cloud's global model as a run would and score every pool sample
    of the simulated days (days >= coda-first-day): how good the Cloud arm's model is."""
    import torch

    from clients.coda_device import auc
    from experiments.setup import effective_config, resolve
    from fedrec.coda.data import build_pool, data_origin, item_categories
    from fedrec.coda.model import ctr_logits, init_ctr
    from fedrec.coda.train import FEATURES, inputs, train_global

    cfg, cls = resolve(effective_config({}, base))
    o, cloud = cfg.protocol, cls.prepare_data(cfg).cloud()
    cats = item_categories(cloud.items)
    pool = build_pool(cloud.logs, cloud.n_items, o.exposures, o.history_len, cfg.data.seed,
                      data_origin(int(cloud.logs.ts.min()), o.origin), o.period_s)
    params = init_ctr(cloud.n_items, int(cats.max()) + 1, o.dim, o.attention_widths,
                      o.hidden_widths, cfg.train.seed)
    t0 = time.monotonic()
    params, losses = train_global(params, pool.block.take(np.flatnonzero(pool.day < o.first_day)),
                                  cats, o.cloud_epochs, o.cloud_lr, o.cloud_batch, cfg.train.seed)
    test = pool.block.take(np.flatnonzero(pool.day >= o.first_day))
    x = {k: torch.from_numpy(v) for k, v in inputs(test, np.arange(cloud.n_items), cats).items()}
    with torch.no_grad():
        s = ctr_logits(params, {k: x[k] for k in FEATURES}).numpy().astype(np.float64)
    y = test.label.astype(np.float64)
    p = 1 / (1 + np.exp(-s))
    res = {"dim": o.dim, "epochs": o.cloud_epochs, "lr": o.cloud_lr, "train_loss": losses,
           "test_auc": auc(s, y), "test_logloss": float(-(y * np.log(p + 1e-7) + (1 - y)
                                                          * np.log(1 - p + 1e-7)).mean()),
           "test_samples": len(test), "train_s": time.monotonic() - t0}
    atomic_write(out / f"global_dim{o.dim}_ep{o.cloud_epochs}_lr{o.cloud_lr}.json", dumps(res))
    log(json.dumps(res))
    return res


ABLATIONS: dict[str, dict[str, Any]] = {
    "random-users": {"coda-neighbours": "random"},
    "no-classifier": {"coda-filter": False},
    "no-acceptance": {"coda-accept": False},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.coda", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=["arms", "ablations", "sweep", "global"])
    p.add_argument("what", nargs="?", help="sweep: a coda option, e.g. sigma or k")
    p.add_argument("--run-config", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--values", default="", help="sweep: comma-separated values")
    p.add_argument("--out", default="runs/coda")
    args = p.parse_args(argv)
    base = {**read_run_config(args.run_config), **parse_sets(args.set), "quiet": True}
    stem = Path(args.run_config).stem
    out = Path(args.out) / stem / args.experiment
    out.mkdir(parents=True, exist_ok=True)
    if args.experiment == "arms":
        arms(base, out, stem, {})
    elif args.experiment == "global":
        global_model(base, out)
    elif args.experiment == "ablations":
        arms(base, out, stem, ABLATIONS)
    else:
        if not args.what or not args.values:
            p.error("sweep needs an option and --values, e.g. sweep sigma --values 0.05,0.2,0.5")
        values = [json.loads(v) for v in args.values.split(",")]
        arms(base, out / args.what, stem,
             {f"{args.what}={v}": {f"coda-{args.what}": v} for v in values}, local=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
