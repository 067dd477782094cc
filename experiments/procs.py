"""The processes a run starts, found through /proc (fedrec.memory's process table), and how
they are stopped (Linux). Light imports, so the watchdog in experiments.supervise starts fast."""

from __future__ import annotations

import os
import signal
import time

from fedrec.memory import ProcStat, process_table, read_stat
from fedrec.memory import descendants as memory_descendants


def descendants(root: int, table: dict[int, ProcStat] | None = None) -> set[int]:
    """Every process below ``root`` (children, grandchildren, ...), ``root`` excluded."""
    table = process_table() if table is None else table
    return set(memory_descendants(table, [root])) - {root}


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, killed but not yet reaped, is not alive)."""
    stat = read_stat(pid)
    return stat is not None and stat.state not in ("Z", "X")


def process_groups(root: int) -> set[int]:
    """Process groups of ``root`` and all its descendants, except this process's own. The
    SuperExec runs in a session of its own, and the simulation process and Ray's
    raylet/actors in that session."""
    table = process_table()
    pids = descendants(root, table) | {root}
    return {table[p].pgrp for p in pids if p in table} - {os.getpgrp()}


def send(sig: int, pids: set[int], groups: set[int]) -> None:
    """``sig`` to each process group and each process; ones that are gone are skipped."""
    for kill, ids in ((os.killpg, groups), (os.kill, pids)):
        for i in ids:
            try:
                kill(i, sig)
            except (ProcessLookupError, PermissionError):
                pass


def stop(pids: set[int], groups: set[int], grace_s: float = 10.0) -> None:
    """SIGTERM to ``groups`` and ``pids``, SIGKILL to whatever still lives after ``grace_s``."""
    send(signal.SIGTERM, pids, groups)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not any(p in pids or st.pgrp in groups
                   for p, st in process_table().items() if st.state != "Z"):
            break
        time.sleep(0.2)
    send(signal.SIGKILL, pids, groups)
