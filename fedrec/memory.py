"""Memory of a whole process tree, sampled from Linux ``/proc``.

``/usr/bin/time`` and ``resource.getrusage`` see one process (or the children it waited
for, one at a time): a Flower run is the launcher plus the SuperLink, the SuperExec, the
``flwr-simulation`` process, Ray's gcs_server, raylet and worker actors. Here the tree is
``root`` and every descendant by the ``ppid`` links in ``/proc/<pid>/stat`` (sessions and
process groups do not matter: the SuperExec and Ray run in sessions of their own but are
still descendants).

Two sums are reported:

* RSS: resident pages of each process, summed. A page mapped by several processes is
  counted once per process, so Ray's shared object store (a file in ``/dev/shm`` mapped by
  the raylet and the workers) and copy-on-write pages are counted several times.
* PSS (``/proc/<pid>/smaps_rollup``): each resident page divided by the number of
  processes that map it, so the sum over the tree counts shared pages once. Falls back to
  RSS for a process whose ``smaps_rollup`` cannot be read.

Limitation: a process whose parent dies is re-parented to init (or to the nearest
"child subreaper") and leaves the tree. Pass its pid in ``extra_roots``, or run the command
under ``python -m fedrec.memory``, which makes itself a subreaper so that such orphans
re-parent to it and stay counted. Pages that only a file in ``/dev/shm`` holds (written,
then unmapped by every process) belong to no process and are in neither sum.

    python -m fedrec.memory [--interval 0.5] [--json FILE] -- COMMAND ...

runs COMMAND, samples its tree every 0.5 s, prints ``peak tree RSS X GB, PSS Y GB, N
processes (sampled every 0.5 s)`` to stderr and exits with COMMAND's status.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

PROC = Path("/proc")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` used here."""

    ppid: int
    state: str  # "R", "S", ..., "Z" (zombie: exited, not yet reaped, no memory)
    rss_bytes: int
    pgrp: int = 0  # process group (what experiments.procs signals)


@dataclass(frozen=True)
class TreeMemory:
    """One sample of a process tree: sums over its live (non-zombie) processes."""

    rss_bytes: int
    pss_bytes: int
    n_procs: int


@dataclass(frozen=True)
class TreePeak:
    """Peaks over a sampling run; each maximum is taken separately over the samples."""

    rss_bytes: int
    pss_bytes: int
    n_procs: int
    samples: int
    interval_s: float


def read_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    """Parse ``/proc/<pid>/stat``; None when the process is gone or unreadable."""
    try:
        text = (proc / str(pid) / "stat").read_text()
        fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": comm may hold spaces
        return ProcStat(ppid=int(fields[1]), state=fields[0],
                        rss_bytes=int(fields[21]) * PAGE_BYTES, pgrp=int(fields[2]))
    except (OSError, IndexError, ValueError):
        return None


def process_table(proc: Path = PROC) -> dict[int, ProcStat]:
    """pid -> stat of every process listed in ``proc`` that is still there when read."""
    table = {}
    for entry in proc.iterdir():
        if entry.name.isdigit() and (stat := read_stat(int(entry.name), proc)) is not None:
            table[int(entry.name)] = stat
    return table


def descendants(table: dict[int, ProcStat], roots: Iterable[int]) -> list[int]:
    """``roots`` that are in ``table`` and all their descendants, each once, sorted."""
    children: dict[int, list[int]] = {}
    for pid, stat in table.items():
        children.setdefault(stat.ppid, []).append(pid)
    seen: set[int] = set()
    todo = [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo += children.get(pid, [])
    return sorted(seen)


def tree_pids(root: int, extra_roots: Iterable[int] = (), proc: Path = PROC) -> list[int]:
    """``root``, ``extra_roots`` and all their descendants (ppid links), sorted."""
    return descendants(process_table(proc), [root, *extra_roots])


def read_pss(pid: int, proc: Path = PROC) -> int | None:
    """Proportional set size in bytes from ``/proc/<pid>/smaps_rollup``; None if unreadable."""
    try:
        for line in (proc / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024  # "Pss:   1234 kB"
    except (OSError, IndexError, ValueError):
        return None
    return None


def tree_memory(root: int, extra_roots: Iterable[int] = (), proc: Path = PROC,
                include_root: bool = True) -> TreeMemory:
    """RSS and PSS summed over the tree of ``root`` (see the module docstring).

    ``include_root=False`` leaves ``root`` itself out (its descendants stay), for a
    sampler that measures the children of its own process.
    """
    table = process_table(proc)
    pids = [pid for pid in descendants(table, [root, *extra_roots])
            if table[pid].state != "Z" and (include_root or pid != root)]
    rss = sum(table[pid].rss_bytes for pid in pids)
    pss = 0
    for pid in pids:
        value = read_pss(pid, proc)
        pss += table[pid].rss_bytes if value is None else value
    return TreeMemory(rss_bytes=rss, pss_bytes=pss, n_procs=len(pids))


class TreeSampler:
    """Samples ``tree_memory`` in a background thread; ``.peak`` holds the maxima.

    Usage::

        with TreeSampler(os.getpid()) as sampler:
            work()
        print(sampler.peak.pss_bytes)

    One sample is taken on entry and one on exit, and every ``interval_s`` in between,
    so a peak shorter than the interval can be missed.
    """

    def __init__(self, root: int | None = None, *, interval_s: float = 0.5,
                 extra_roots: Iterable[int] = (), include_root: bool = True) -> None:
        self.root = os.getpid() if root is None else root
        self.interval_s = interval_s
        self.extra_roots = tuple(extra_roots)
        self.include_root = include_root
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="TreeSampler", daemon=True)
        self._rss = self._pss = self._procs = self._samples = 0

    @property
    def peak(self) -> TreePeak:
        return TreePeak(rss_bytes=self._rss, pss_bytes=self._pss, n_procs=self._procs,
                        samples=self._samples, interval_s=self.interval_s)

    def sample(self) -> TreeMemory:
        """Take one sample now and fold it into the peaks."""
        now = tree_memory(self.root, self.extra_roots, include_root=self.include_root)
        self._rss = max(self._rss, now.rss_bytes)
        self._pss = max(self._pss, now.pss_bytes)
        self._procs = max(self._procs, now.n_procs)
        self._samples += 1
        return now

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> Self:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def format_peak(peak: TreePeak) -> str:
    """The one-line summary the CLI prints."""
    return (f"peak tree RSS {peak.rss_bytes / 1e9:.2f} GB, PSS {peak.pss_bytes / 1e9:.2f} GB, "
            f"{peak.n_procs} processes (sampled every {peak.interval_s:g} s)")


# ---- command line: python -m fedrec.memory [--interval S] [--json FILE] -- COMMAND ...

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process instead of init (Linux only), so
    they stay in its tree; False where prctl is unavailable."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Options before ``--``, the command after it."""
    parser = argparse.ArgumentParser(prog="python -m fedrec.memory",
                                     description="Run a command; report its process tree's "
                                     "peak RSS and PSS.", usage="%(prog)s [options] -- COMMAND ...")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--json", type=Path, default=None, help="also write the peaks here")
    cut = argv.index("--") if "--" in argv else len(argv)
    opts, command = parser.parse_args(argv[:cut]), argv[cut + 1:]
    if not command:
        parser.error("give the command after --")
    return opts, command


def wait_forwarding(child: subprocess.Popen) -> int:
    """Wait for ``child``; SIGTERM to us is passed on to it, and Ctrl-C (which the terminal
    already sends to the child) does not stop us before it. Returns a shell-style status."""
    previous = (signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum)))
    try:
        code = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    return 128 - code if code < 0 else code


def run_measured(command: list[str], interval_s: float) -> tuple[int, TreePeak, float]:
    """Run ``command`` under a TreeSampler of this process's descendants."""
    become_subreaper()
    start = time.monotonic()
    with TreeSampler(os.getpid(), interval_s=interval_s, include_root=False) as sampler:
        status = wait_forwarding(subprocess.Popen(command))
    return status, sampler.peak, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    opts, command = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        status, peak, wall_s = run_measured(command, opts.interval)
    except OSError as err:  # command not found, not executable
        print(f"fedrec.memory: cannot run {command[0]}: {err}", file=sys.stderr)
        return 127
    print(format_peak(peak), file=sys.stderr)
    left = tree_memory(os.getpid(), include_root=False).n_procs
    if left:
        print(f"fedrec.memory: {left} descendant processes still running", file=sys.stderr)
    if opts.json:
        opts.json.write_text(json.dumps({"command": command, "exit_status": status,
                                         "wall_s": round(wall_s, 1), **asdict(peak)}, indent=2))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
