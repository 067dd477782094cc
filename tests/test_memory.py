"""fedrec.memory: the process-tree walk on a hand-made /proc, and real trees of children."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedrec.memory import PAGE_BYTES, TreeMemory, TreeSampler, tree_memory, tree_pids

MB = 2**20
ALLOC = 200 * MB
# The child holds ALLOC written bytes (b"x" * n touches every page), starts a grandchild,
# prints the grandchild's pid and sleeps until killed.
CHILD = f"""
import subprocess, sys, time
data = b"x" * {ALLOC}
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(grandchild.pid, flush=True)
time.sleep(60)
"""


def _stat_line(pid: int, ppid: int, rss_pages: int, state: str = "S") -> str:
    """A /proc/<pid>/stat line; the comm holds ') (' like real ones may."""
    fields = [state, str(ppid)] + ["0"] * 19 + [str(rss_pages)] + ["0"] * 20
    return f"{pid} (odd ) (name) " + " ".join(fields) + "\n"


def _fake_proc(root: Path, procs: dict[int, tuple[int, int, str, int | None]]) -> Path:
    """pid -> (ppid, rss pages, state, Pss kB or None for an unreadable smaps_rollup)."""
    for pid, (ppid, pages, state, pss_kb) in procs.items():
        (root / str(pid)).mkdir()
        (root / str(pid) / "stat").write_text(_stat_line(pid, ppid, pages, state))
        if pss_kb is not None:
            (root / str(pid) / "smaps_rollup").write_text(
                f"00400000-7ff0 ---p 00000000 00:00 0   [rollup]\nRss: 1 kB\nPss:  {pss_kb} kB\n")
    (root / "self").mkdir()  # non-numeric entries are skipped
    return root


@pytest.fixture()
def fake_proc(tmp_path: Path) -> Path:
    # 1 init; 10 root -> 11 -> 12 (vanished: a directory without stat, as when a
    # process exits mid-walk) -> 13 (lost with it); 11 -> 14 zombie; 20 orphan under init.
    root = _fake_proc(tmp_path, {1: (0, 5, "S", 20), 10: (1, 100, "S", 300),
                                 11: (10, 50, "R", None), 13: (12, 7, "S", 28),
                                 14: (11, 0, "Z", None), 20: (1, 30, "S", 60)})
    (root / "12").mkdir()
    return root


def test_tree_pids_follows_ppid_links_and_skips_vanished(fake_proc: Path) -> None:
    assert tree_pids(10, proc=fake_proc) == [10, 11, 14]
    assert tree_pids(10, extra_roots=[20, 99], proc=fake_proc) == [10, 11, 14, 20]
    assert tree_pids(12, proc=fake_proc) == []


def test_tree_memory_sums_rss_and_pss_with_rss_fallback(fake_proc: Path) -> None:
    # 10: Pss 300 kB; 11: no smaps_rollup -> its RSS; 14: zombie, not counted
    assert tree_memory(10, proc=fake_proc) == TreeMemory(
        rss_bytes=150 * PAGE_BYTES, pss_bytes=300 * 1024 + 50 * PAGE_BYTES, n_procs=2)
    assert tree_memory(10, [20], proc=fake_proc, include_root=False) == TreeMemory(
        rss_bytes=80 * PAGE_BYTES, pss_bytes=50 * PAGE_BYTES + 60 * 1024, n_procs=2)


def test_tree_memory_of_a_dead_pid_is_empty() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert tree_memory(proc.pid) == TreeMemory(0, 0, 0)


@pytest.fixture()
def child_tree() -> Iterator[tuple[TreeMemory, subprocess.Popen, int]]:
    """(this process's tree before the child, the child, the grandchild's pid)."""
    before = tree_memory(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    grandchild = int(child.stdout.readline())  # printed once the allocation is done
    yield before, child, grandchild
    for pid in (grandchild, child.pid):
        os.kill(pid, 9)
    child.wait()
    child.stdout.close()


def test_tree_of_this_process_holds_child_and_grandchild(child_tree) -> None:
    _, child, grandchild = child_tree
    pids = tree_pids(os.getpid())
    assert {os.getpid(), child.pid, grandchild} <= set(pids)
    # the child's own tree: this test process's memory moves with whatever ran before it
    sub = tree_memory(child.pid)
    assert sub.n_procs == 2
    assert sub.rss_bytes >= ALLOC and sub.pss_bytes >= ALLOC  # private pages count in full


def test_sampler_peak_includes_the_child(child_tree) -> None:
    _, child, _ = child_tree
    with TreeSampler(child.pid, interval_s=0.05) as sampler:
        pass
    assert sampler.peak.samples >= 2  # on entry and on exit
    assert sampler.peak.rss_bytes >= ALLOC and sampler.peak.pss_bytes >= ALLOC


def test_sampler_thread_catches_a_child_that_is_gone_at_exit() -> None:
    with TreeSampler(os.getpid(), interval_s=0.05) as sampler:
        base = sampler.peak.rss_bytes
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
        grandchild = int(child.stdout.readline())
        seen = sampler.peak.samples
        deadline = time.monotonic() + 5
        while sampler.peak.samples < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # wait for two samples taken while the child holds its memory
        for pid in (grandchild, child.pid):
            os.kill(pid, 9)
        child.wait()
        child.stdout.close()
    assert sampler.peak.samples >= seen + 3
    assert sampler.peak.rss_bytes - base >= ALLOC
    assert tree_memory(os.getpid()).rss_bytes - base < ALLOC


# The command starts a process that starts an allocating grandchild and exits at once: the
# grandchild is orphaned, re-parents to the CLI (a subreaper) and must still be counted.
ORPHANING = f"""
import subprocess, sys, time
inner = "import time; data = b'x' * {100 * MB}; time.sleep(0.8)"
subprocess.run([sys.executable, "-c", "import subprocess, sys; subprocess.Popen([sys.executable, '-c', {{!r}}])".format(inner)])
time.sleep(1.5)
sys.exit(3)
"""


def test_cli_counts_orphans_and_passes_the_exit_status(tmp_path: Path) -> None:
    out = tmp_path / "peak.json"
    done = subprocess.run([sys.executable, "-m", "fedrec.memory", "--interval", "0.05",
                           "--json", str(out), "--", sys.executable, "-c", ORPHANING],
                          check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == 3
    line = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"peak tree RSS \d+\.\d\d GB, PSS \d+\.\d\d GB, \d+ processes "
                        r"\(sampled every 0\.05 s\)", line)
    peak = json.loads(out.read_text())
    assert peak["exit_status"] == 3 and peak["samples"] >= 10
    assert peak["rss_bytes"] >= 100 * MB and peak["pss_bytes"] >= 100 * MB
    assert peak["n_procs"] >= 2


def test_cli_needs_a_command() -> None:
    done = subprocess.run([sys.executable, "-m", "fedrec.memory", "--json", "x"],
                          check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "give the command after --" in done.stderr
