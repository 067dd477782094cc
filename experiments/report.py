"""Compare finished (or failed) runs: a table on stdout and PNG plots.

Usage::

    python -m experiments.report RUN_DIR [RUN_DIR ...] [--out DIR] [--metric test_hr@10]

Reads each run directory (fedrec/results.py): ``rounds.jsonl`` (required), ``config.json``
and ``summary.json`` (optional, so a killed run is reported up to its last round). Prints
one row per run: strategy, dataset, status, rounds, the last evaluated test HR@10 and
NDCG@10, the best value of ``--metric`` and its round, total bytes up/down, wall time.
Saves ``<metric>.png`` (metric vs round) and ``bytes.png`` (bytes up and down per round),
one line per run, into ``--out`` (default: ``report/`` next to the first run directory).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrec.errors import FedrecError
from fedrec.results import read_rounds

MB = 1e6


@dataclass(frozen=True)
class Run:
    """One run directory as read from disk."""

    name: str
    flat: dict[str, Any]          # the run-config as the ServerApp saw it ({} if unknown)
    summary: dict[str, Any]       # {} if the run wrote none
    rounds: list[dict[str, Any]]  # one record per finished round


def _json_or_empty(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def load_run(path: str | Path) -> Run:
    """Read a run directory; a one-line FedrecError if it has no finished round."""
    path = Path(path)
    if not (path / "rounds.jsonl").is_file():
        raise FedrecError(f"{path} has no rounds.jsonl; pass a run directory (printed by "
                          "experiments.run) whose run finished at least one round")
    rounds = read_rounds(path)
    if not rounds:
        raise FedrecError(f"{path}/rounds.jsonl is empty; the run finished no round")
    config = _json_or_empty(path / "config.json")
    return Run(path.resolve().name, config.get("flat", {}), _json_or_empty(path / "summary.json"),
               rounds)


def series(run: Run, key: str) -> tuple[list[int], list[float]]:
    """(rounds, values) of the records that report ``key`` with a number."""
    pts = [(r["round"], float(r[key])) for r in run.rounds if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def best(run: Run, key: str) -> tuple[float | None, int | None]:
    """Best value of ``key`` over rounds (lowest for losses, highest otherwise) and its round."""
    xs, ys = series(run, key)
    if not ys:
        return None, None
    pick = min if "loss" in key else max
    i = ys.index(pick(ys))
    return ys[i], xs[i]


def final(run: Run, key: str) -> float | None:
    _, ys = series(run, key)
    return ys[-1] if ys else None


def row(run: Run, metric: str) -> dict[str, str]:
    """One table row of formatted cells."""
    value, at = best(run, metric)
    wall = run.summary.get("wall_s", run.rounds[-1].get("elapsed_s"))
    total = lambda k: sum(r.get(k) or 0.0 for r in run.rounds) / MB
    return {
        "run": run.name,
        "strategy": str(run.flat.get("strategy", "?")),
        "dataset": str(run.flat.get("dataset", "?")),
        "status": str(run.summary.get("status", "unknown")),
        "rounds": str(len(run.rounds)),
        "HR@10": _num(final(run, "test_hr@10")),
        "NDCG@10": _num(final(run, "test_ndcg@10")),
        f"best {metric}": "-" if value is None else f"{value:.4f} (r{at})",
        "up MB": f"{total('bytes_up'):.1f}",
        "down MB": f"{total('bytes_down'):.1f}",
        "wall s": _num(wall, 1),
    }


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(rows: list[dict[str, str]]) -> str:
    """Left-aligned text columns, a header and a rule."""
    cols = list(rows[0])
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    line = lambda cells: "  ".join(cells[c].ljust(width[c]) for c in cols).rstrip()
    return "\n".join([line({c: c for c in cols}), line({c: "-" * width[c] for c in cols}),
                      *(line(r) for r in rows)])


def plot_metric(runs: list[Run], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        xs, ys = series(run, metric)
        ax.plot(xs, ys, marker="o", markersize=3, label=run.name)
    ax.set(xlabel="round", ylabel=metric, title=f"{metric} per round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_bytes(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
    for ax, key in zip(axes, ("bytes_up", "bytes_down"), strict=True):
        for run in runs:
            xs, ys = series(run, key)
            ax.plot(xs, [y / MB for y in ys], marker="o", markersize=3, label=run.name)
        ax.set(xlabel="round", ylabel="MB (all devices)", title=f"{key} per round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def check_metric(runs: list[Run], metric: str) -> None:
    if any(series(r, metric)[0] for r in runs):
        return
    keys = sorted({k for r in runs for rec in r.rounds for k in rec
                   if k.startswith(("test_", "valid_", "train_"))})
    raise FedrecError(f"metric {metric!r} is in no run; pass --metric one of {', '.join(keys)}")


def report(paths: list[str], out: str | None, metric: str) -> list[Path]:
    """Print the table, save the plots; returns the PNG paths."""
    runs = [load_run(p) for p in paths]
    check_metric(runs, metric)
    print(format_table([row(r, metric) for r in runs]))
    out_dir = Path(out) if out else Path(paths[0]).resolve().parent / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = [out_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', metric)}.png", out_dir / "bytes.png"]
    plot_metric(runs, metric, saved[0])
    plot_bytes(runs, saved[1])
    return saved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.report",
                                description=__doc__.split("\n")[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="folder for the PNGs (default: report/ next to the first run)")
    p.add_argument("--metric", default="test_hr@10", help="metric to plot (default test_hr@10)")
    args = p.parse_args(argv)
    try:
        saved = report(args.run_dirs, args.out, args.metric)
    except FedrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in saved:
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
