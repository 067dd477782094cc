"""Watchdog of one ``experiments.run`` invocation: when the launcher dies without cleaning up
(``kill -9``, an OOM kill, a closed terminal), stop everything it started and say so.

Usage (started by experiments.run in a session of its own, so it outlives the launcher)::

    python -m experiments.supervise LAUNCHER_PID RUN_DIR [PATH_TO_DELETE ...]

Every ``interval`` seconds it records the launcher's descendants (the SuperLink, SuperExec,
simulation, Ray's processes; once the launcher is gone they are re-parented and no longer
reachable from it, hence the running record). When the launcher is no longer alive it stops
those processes and their process groups (SIGTERM, then SIGKILL after a grace period),
deletes the given paths (the per-run Flower home) and marks a ``running`` summary as
``interrupted`` (resumable with ``python -m experiments.run --resume RUN_DIR``). A launcher
that ends normally kills the watchdog first; it then does nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from experiments import procs
from fedrec.memory import process_table, read_stat


def watch(launcher: int, interval: float = 0.5) -> tuple[set[int], set[int]]:
    """Wait for ``launcher`` to die; returns the (pids, process groups) it had started."""
    pids: set[int] = set()
    groups: set[int] = set()
    stat = read_stat(launcher)
    if stat is None:
        raise OSError(f"pid {launcher} is gone")
    keep = {os.getpgrp(), stat.pgrp}   # the launcher's own group (a shell job, or pytest)
    while procs.alive(launcher):
        table = process_table()
        found = procs.descendants(launcher, table)
        pids |= found
        groups |= {table[p].pgrp for p in found if p in table} - keep
        time.sleep(interval)
    return pids - {os.getpid()}, groups


def main(argv: list[str]) -> int:
    launcher, run_dir, cleanup = int(argv[0]), Path(argv[1]), argv[2:]
    try:
        pids, groups = watch(launcher)
    except OSError:                      # the launcher was gone before we looked
        pids, groups = set(), set()
    procs.stop(pids, groups, grace_s=5.0)
    for path in cleanup:
        shutil.rmtree(path, ignore_errors=True)
    from fedrec.results import mark_interrupted

    mark_interrupted(run_dir, f"the launcher (pid {launcher}) died without stopping the run")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
