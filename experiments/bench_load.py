"""Benchmark: ML-1M load time and peak RSS, first (parse + cache write) vs cached.

Each measurement runs in a fresh Python process, which reports the wall time of the
``load_dataset`` call alone (imports excluded) and its own peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``), next to the RSS after imports. The child
starts no processes (checked after the load: its tree, ``fedrec.memory.tree_pids``, is one
process), so its own ``ru_maxrss`` is its whole tree's, and exact, where a sampler would miss
most of a 0.1-0.5 s load.

    python experiments/bench_load.py [--data-root DIR] [--repeat 3]

Modes: ``nocache`` = parse only; ``first`` = parse + write the cache (empty cache folder);
``cached`` = read the cache written by ``first``. The median of ``--repeat`` runs is shown.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCES = {
    "ratings_chrono.dat": "ml-1m",  # the preset: no ratings.dat in the shared folder
    "ratings_users0001-2999.dat.gz": "ml-1m/ratings_users0001-2999.dat.gz",
}


def _child(name: str, mode: str, cache_dir: str, data_root: str | None) -> None:
    """Run one load in this process and print a JSON line with its measurements."""
    from fedrec.data import load_dataset
    from fedrec.memory import tree_pids

    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    data = load_dataset(name, data_root=data_root, cache_dir=cache_dir,
                        use_cache=mode != "nocache")
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"s": seconds, "peak_mb": peak_mb, "base_mb": base_mb, "rows": len(data),
                      "procs": len(tree_pids(os.getpid()))}))


def _run(name: str, mode: str, cache_dir: str, data_root: str | None) -> dict:
    command = [sys.executable, __file__, "--child", name, mode, cache_dir]
    if data_root:
        command += ["--data-root", data_root]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if result["procs"] != 1:
        raise SystemExit(f"{name} {mode}: the load started processes; ru_maxrss misses them")
    return result


def _measure(name: str, mode: str, repeat: int, data_root: str | None) -> dict:
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as cache_dir:
            if mode == "cached":
                _run(name, "first", cache_dir, data_root)
            runs.append(_run(name, mode, cache_dir, data_root))
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("NAME", "MODE", "CACHE_DIR"))
    args = parser.parse_args()
    if args.child:
        _child(*args.child, data_root=args.data_root)
        return
    print("| source | mode | rows | load s | peak RSS MiB | RSS after imports MiB |\n"
          "|---|---|---|---|---|---|")
    for label, name in SOURCES.items():
        for mode in ("nocache", "first", "cached"):
            m = _measure(name, mode, args.repeat, args.data_root)
            print(f"| {label} | {mode} | {m['rows']:,} | {m['s']:.3f} | {m['peak_mb']:.0f} "
                  f"| {m['base_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
