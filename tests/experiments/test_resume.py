"""experiments.resume and the watchdog's helpers: atomic run directories, what may be resumed,
and a 'running' summary that outlived its launcher (no Flower, no Ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from experiments import procs
from experiments.resume import changed_keys, claim_run_dir, plan_resume, write_launch
from fedrec.errors import ConfigError
from fedrec.results import RunRecorder, mark_interrupted, read_summary


def test_claim_is_atomic_and_auto_names_never_collide(tmp_path):
    claimed: list[Path] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        claimed.append(claim_run_dir(tmp_path, "fedmf-synthetic-20260101T000000", auto=True))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(claimed)) == 8 and all(p.is_dir() for p in claimed)
    assert {p.name for p in claimed} == {"fedmf-synthetic-20260101T000000",
                                         *(f"fedmf-synthetic-20260101T000000-{i}" for i in range(2, 9))}


def test_a_given_name_that_exists_is_refused(tmp_path):
    claim_run_dir(tmp_path, "mine", auto=False)
    with pytest.raises(ConfigError, match=r"run directory .*mine already exists; pass another "
                                          r"run-name \(or none, to get a fresh one\), or --resume it"):
        claim_run_dir(tmp_path, "mine", auto=False)


def started(tmp_path: Path, summary: dict | None, **overrides) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    flat = {"num-rounds": 3, "output-dir": str(tmp_path), "run-name": "run", **overrides}
    write_launch(run_dir, flat, n_devices=30, n_clients=4)
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def test_plan_resume_continues_with_the_started_config(tmp_path):
    run_dir = started(tmp_path, {"status": "interrupted", "restartable": True}, lr=0.5)
    overrides, n_devices, n_clients = plan_resume(run_dir, {"lr": 0.5, "output-dir": "/else"})
    assert overrides == {"num-rounds": 3, "lr": 0.5, "output-dir": str(tmp_path),
                         "run-name": "run", "resume": True}
    assert (n_devices, n_clients) == (30, 4)


def test_plan_resume_of_a_run_killed_before_its_first_summary(tmp_path):
    assert plan_resume(started(tmp_path, None), {})[0]["resume"] is True


def test_a_finished_run_has_nothing_to_resume(tmp_path):
    assert plan_resume(started(tmp_path, {"status": "finished", "rounds": 3}), {}) is None


def test_resume_refuses_a_changed_config(tmp_path):
    run_dir = started(tmp_path, {"status": "interrupted"}, lr=0.5)
    with pytest.raises(ConfigError, match=r"^--resume keeps the config the run was started with: "
                                          r"lr was 0.5, not 0.1; start a new run to change it$"):
        plan_resume(run_dir, {"lr": 0.1})
    assert changed_keys({"lr": 0.5}, {"num-rounds": 20, "lr": 0.5, "resume": True}) == []
    assert changed_keys({}, {"num-rounds": 21, "seed": 0}) == ["num-rounds"]   # default 20


def test_resume_refuses_a_failed_run_and_a_live_one(tmp_path):
    failed = started(tmp_path, {"status": "failed", "error": "FedrecError: diverged"})
    with pytest.raises(ConfigError, match=r"failed \(FedrecError: diverged\); a failed run is not "
                                          r"resumed: fix the cause and start a new run$"):
        plan_resume(failed, {})
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        import socket

        (failed / "summary.json").write_text(json.dumps(
            {"status": "running", "pid": live.pid, "host": socket.gethostname()}))
        with pytest.raises(ConfigError, match=rf"is still running \(pid {live.pid}\); wait"):
            plan_resume(failed, {})
    finally:
        live.kill()
        live.wait()
    assert plan_resume(failed, {})[0]["resume"] is True   # its launcher is gone: resumable


def test_not_a_run_directory(tmp_path):
    with pytest.raises(ConfigError, match=r"is not a run directory started by experiments.run"):
        plan_resume(tmp_path, {})


def test_mark_interrupted_only_touches_a_running_summary(tmp_path):
    rec = RunRecorder(tmp_path)
    rec.start({})
    rec.log_round({"round": 1})
    assert mark_interrupted(tmp_path, "the launcher died")
    summary = read_summary(tmp_path)
    assert summary == {"status": "interrupted", "error": "the launcher died", "restartable": True,
                       "rounds_completed": 1,
                       "resume": f"python -m experiments.run --resume {tmp_path}"}
    assert not mark_interrupted(tmp_path, "again")            # already ended: unchanged
    assert not mark_interrupted(tmp_path / "nothing", "x")


def test_descendants_and_alive():
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c',"
            " 'import time; time.sleep(30)']); print('up', flush=True); time.sleep(30)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "up"
        below = procs.descendants(os.getpid())
        assert child.pid in below and len(procs.descendants(child.pid)) == 1
        assert procs.alive(child.pid)
        grandchild = next(iter(procs.descendants(child.pid)))
        procs.stop({child.pid, grandchild}, set(), grace_s=5)
        child.wait()
        deadline = time.monotonic() + 5
        while procs.alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not procs.alive(child.pid) and not procs.alive(grandchild)
    finally:
        child.kill()
        child.stdout.close()
