"""Unhappy paths end to end: kill -9 and resume, a dead simulation worker, runs that must fail
with one line, faults injected on purpose (synthetic "tiny": 30 devices, 4 Flower clients)."""

from __future__ import annotations

import glob
import json
import os
import re
import tempfile
from pathlib import Path

import pytest

from experiments import run as er
from experiments.flower_engine import REPO
from fedrec.results import read_rounds, read_summary
from strategies.fedmf import FedMF, FedMFDevice
from tests.experiments.runs import TINY, comparable, kill_9_after, reference_run, sets

ROUNDS = 12






@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return reference_run(tmp_path_factory.mktemp("ref"), ROUNDS)


class CrashOnceDevice(FedMFDevice):
    """FedMF, except that the worker process running device 0 in round 2 dies (once)."""

    def run_many(self, tasks):
        mark = Path(os.environ.get("FEDREC_TEST_CRASH_MARK", "/nonexistent/unset"))
        if tasks and tasks[0].rnd == 2 and tasks[0].kind == "fit" and mark.parent.is_dir() \
                and not mark.exists() \
                and any(t.device_id == 0 for t in tasks):
            mark.write_text("crashed")
            os._exit(1)   # like a segfault or the OOM killer: no exception, no reply
        return super().run_many(tasks)


class CrashOnce(FedMF):
    device_cls = CrashOnceDevice


@pytest.mark.slow
def test_kill_9_stops_every_process_and_resume_ends_like_an_undisturbed_run(reference, tmp_path,
                                                                           device_state_root):
    run_dir = tmp_path / "k"

    def many(started: set[int]) -> None:   # SuperLink, SuperExec, simulation, Ray, flwr
        assert len(started) >= 5

    kill_9_after(sets(*TINY, f"num-rounds={ROUNDS}", f"output-dir={tmp_path}", "run-name=k"),
                 run_dir, 2, 180, many)
    summary = read_summary(run_dir)
    assert summary["status"] == "interrupted" and summary["restartable"] is True
    assert summary["resume"] == f"python -m experiments.run --resume {run_dir}"
    assert not glob.glob(os.path.join(tempfile.gettempdir(), "fedrec-flwr-k-*"))
    assert not list((REPO / ".flwr").glob("k-*"))
    done = len(read_rounds(run_dir))
    state = device_state_root / (run_dir / "run_id").read_text()   # the hosts' own folder
    assert 2 <= done < ROUNDS and state.is_dir() and not (run_dir / "device_state").exists()

    assert er.main(["--resume", str(run_dir)]) == 0            # the default engine again
    assert comparable(run_dir) == comparable(reference)
    assert read_summary(run_dir)["final"] == read_summary(reference)["final"]
    assert not state.exists() and (run_dir / "model.npz").is_file()   # the hosts cleaned up

    before = (run_dir / "summary.json").read_bytes()
    assert er.main(["--resume", str(run_dir)]) == 0            # finished: nothing changes
    assert (run_dir / "summary.json").read_bytes() == before
    assert er.main(["--resume", str(run_dir), "--set", "lr=1"]) == 0   # finished wins


@pytest.mark.slow
def test_a_dead_worker_is_replaced_and_the_run_ends_like_an_undisturbed_one(reference, tmp_path,
                                                                          monkeypatch, capsys):
    monkeypatch.setenv("FEDREC_TEST_CRASH_MARK", str(tmp_path / "crashed"))
    args = ["--engine", "inprocess", *sets(*TINY, f"num-rounds={ROUNDS}", f"output-dir={tmp_path}",
                                           "run-name=w", f"strategy={__name__}:CrashOnce")]
    status = er.main(args)
    err = capsys.readouterr().err
    assert status == 0, err[-4000:]
    # a cohort of 8 at least: Flower may route more messages to the dead actor before it knows
    assert re.search(r"round 2: a simulation worker died while running \d+ devices", err), err[-4000:]
    assert "restarting from the checkpoint of round 1 (1 of 2)" in err
    assert (tmp_path / "crashed").exists()
    assert comparable(tmp_path / "w") == comparable(reference)


@pytest.mark.slow
@pytest.mark.parametrize(("pair", "message"), [
    ("round-timeout-s=2", ("error: run failed after 0 round(s): FedrecError: round 1: none of "
                           "the 4 Flower clients answered")),
    ("server-lr=inf", ("error: run failed after 0 round(s): FedrecError: round 1: the model "
                       "diverged (non-finite values in item_bias, item_emb.weight after "
                       "aggregation); lower lr or server-lr")),
])
def test_runs_that_cannot_go_on_fail_with_one_line(pair, message, tmp_path, capsys,
                                                   device_state_root):
    args = ["--engine", "inprocess", *sets(*TINY, "num-rounds=2", f"output-dir={tmp_path}",
                                           "run-name=f", pair)]
    assert er.main(args) == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(message)
    summary = read_summary(tmp_path / "f")
    assert summary["status"] == "failed" and summary["restartable"] is False
    if pair.startswith("server-lr"):   # the hosts were told the run is over and cleaned up
        assert not (device_state_root / (tmp_path / "f" / "run_id").read_text()).exists()
    # (clients that missed the round timeout may still be working when the end message
    # arrives, so a timed-out run can leave their state behind: docs/running.md)


@pytest.mark.slow
def test_one_round_and_a_third_of_devices_unavailable_lose_nothing(tmp_path):
    args = ["--engine", "inprocess", *sets(*TINY, "num-rounds=3", f"output-dir={tmp_path}",
                                           "run-name=u", "simulate-dropouts=false",
                                           "fault-unavailable=0.3", "fault-crash=0.1")]
    assert er.main(args) == 0
    rounds = read_rounds(tmp_path / "u")
    assert [r["round"] for r in rounds] == [1, 2, 3]
    for r in rounds:
        assert 3 <= r["devices_dropped"] <= 18 and r["devices_ok"] >= 10
        assert r["devices_ok"] + r["devices_dropped"] + r["devices_failed"] == 30
        assert r["eval_devices"] == 30
    summary = read_summary(tmp_path / "u")
    assert summary["device_dropouts"] == sum(r["devices_dropped"] for r in rounds)
    assert summary["device_failures"] == sum(r["devices_failed"] for r in rounds) > 0
    # one round only: devices that never trained still get a devices.csv row
    assert er.main(["--engine", "inprocess", *sets(*TINY, "num-rounds=1", f"output-dir={tmp_path}",
                                                   "run-name=one")]) == 0
    lines = (tmp_path / "one" / "devices.csv").read_text().splitlines()
    assert len(lines) == 31 and "rounds_dropped" in lines[0]
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["status"] == "finished"
