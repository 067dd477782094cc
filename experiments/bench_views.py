"""Benchmark: build time and peak RSS of the sample view (``fedrec.views.samples``).

Each dataset is measured in a fresh Python process that loads the dataset (parse cache warm:
``load_dataset`` is timed apart), then times ``build_sample_view`` (windows, side features,
every device's negatives, exposures and evaluation negatives, vectorised) and then
``device(d)`` for every device (each device's padded sample arrays, one at a time, dropped).
Peak RSS is the child's ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (it starts no
processes), next to its RSS after loading the data.

    python experiments/bench_views.py [--dataset ml-1m --dataset taobao] [--exposures 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(name: str, negatives: int, exposures: int, history_len: int, windows: str) -> None:
    from fedrec.data import load_dataset
    from fedrec.views import SampleViewConfig, Windows, build_sample_view

    start = time.perf_counter()
    data = load_dataset(name)
    load_s, data_mb = time.perf_counter() - start, _peak_mb()
    win = Windows(by=windows, day_origin=1511539200, device_day=4, valid_day=7, test_day=8) \
        if windows == "days" else Windows()
    cfg = SampleViewConfig(negatives=negatives, exposures=exposures, history_len=history_len,
                           windows=win)
    start = time.perf_counter()
    view = build_sample_view(data, cfg)
    build_s, build_mb = time.perf_counter() - start, _peak_mb()
    start, samples = time.perf_counter(), 0
    for d in range(view.n_devices):
        samples += len(view.device(d).samples)
    devices_s = time.perf_counter() - start
    print(json.dumps({"dataset": name, "rows": len(data), "devices": view.n_devices,
                      "items": view.n_items, "samples": samples, "load_s": load_s,
                      "build_s": build_s, "devices_s": devices_s, "data_mb": data_mb,
                      "build_mb": build_mb, "peak_mb": _peak_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", default=None)
    parser.add_argument("--negatives", type=int, default=1)
    parser.add_argument("--exposures", type=int, default=5)
    parser.add_argument("--history-len", type=int, default=50)
    parser.add_argument("--windows", choices=("position", "days"), default="position")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    options = [str(args.negatives), str(args.exposures), str(args.history_len), args.windows]
    if args.child:
        _child(args.child, *map(int, options[:3]), args.windows)
        return
    print(f"negatives {args.negatives}, exposures {args.exposures}, L {args.history_len}, "
          f"windows by {args.windows}\n| dataset | rows | devices | samples | load s | build s |"
          " all device(d) s | RSS after load MiB | peak RSS build MiB | peak RSS MiB |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for name in args.dataset or ["ml-1m", "taobao"]:
        command = [sys.executable, __file__, "--child", name, "--negatives", options[0],
                   "--exposures", options[1], "--history-len", options[2], "--windows",
                   options[3]]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        m = json.loads(out.strip().splitlines()[-1])
        print(f"| {name} | {m['rows']:,} | {m['devices']:,} | {m['samples']:,} | "
              f"{m['load_s']:.2f} | {m['build_s']:.2f} | {m['devices_s']:.2f} | "
              f"{m['data_mb']:.0f} | {m['build_mb']:.0f} | {m['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
