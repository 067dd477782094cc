"""The run directory (fedrec.results) and the per-round bookkeeping (strategies.rounds)."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np

from fedrec.protocol import DeviceReply
from fedrec.results import RunRecorder, atomic_write, dumps, read_rounds, read_summary
from strategies.rounds import RoundLog, fit_costs, mean_metrics, progress_line, summarise_eval


# --------------------------------------------------------------------------- run directory
def test_start_writes_config_and_a_running_summary(tmp_path):
    rec = RunRecorder(tmp_path / "a" / "run")
    rec.start({"flat": {"lr": 0.1, "seed": np.int64(3)}, "x": float("nan")})
    assert json.loads((tmp_path / "a/run/config.json").read_text()) == \
        {"flat": {"lr": 0.1, "seed": 3}, "x": None}
    summary = read_summary(rec.dir)
    assert summary["status"] == "running" and summary["rounds_completed"] == 0
    assert summary["pid"] == os.getpid()    # a stale "running" names who was running it
    assert rec.run_id == RunRecorder(rec.dir).run_id != RunRecorder(tmp_path / "b").run_id
    assert rec.run_id.startswith("run-")    # readable, unique, and kept for a resume


def test_rounds_are_rewritten_whole_each_round(tmp_path):
    rec = RunRecorder(tmp_path)
    rec.start({})
    rec.log_round({"round": 1, "loss": np.float32(0.5), "hr": float("inf")})
    assert read_rounds(tmp_path) == [{"round": 1, "loss": 0.5, "hr": None}]
    rec.log_round({"round": 2, "loss": 0.25})
    assert (tmp_path / "rounds.jsonl").read_text() == \
        '{"hr": null, "loss": 0.5, "round": 1}\n{"loss": 0.25, "round": 2}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "rounds.jsonl",
                                                          "summary.json"]   # no temp files


def test_devices_csv_and_summary(tmp_path):
    rec = RunRecorder(tmp_path)
    rec.start({})
    rec.write_devices([])                                  # nothing to write: no file
    assert not (tmp_path / "devices.csv").exists()
    rec.write_devices([{"device_id": 0, "bytes_up": 10.0}, {"device_id": 1, "bytes_up": 2.5}])
    with (tmp_path / "devices.csv").open() as fh:
        assert list(csv.DictReader(fh)) == [{"device_id": "0", "bytes_up": "10.0"},
                                            {"device_id": "1", "bytes_up": "2.5"}]
    rec.write_summary({"status": "failed", "error": "E: x", "rounds_completed": 1})
    assert read_summary(tmp_path) == {"status": "failed", "error": "E: x", "rounds_completed": 1}


def test_devices_csv_takes_the_union_of_columns(tmp_path):
    # device 0 never trained (dropped every round): its row has no cost keys
    rec = RunRecorder(tmp_path)
    rec.write_devices([{"device_id": 0, "rounds_dropped": 1.0},
                       {"device_id": 1, "rounds_ok": 1.0, "bytes_up": 4.0},
                       {"device_id": 2, "rounds_failed": 1.0}])
    with (tmp_path / "devices.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["device_id", "bytes_up", "rounds_dropped", "rounds_failed", "rounds_ok"]
    assert [r["rounds_ok"] for r in rows] == ["0", "1.0", "0"]
    assert rows[2] == {"device_id": "2", "bytes_up": "0", "rounds_dropped": "0",
                       "rounds_failed": "1.0", "rounds_ok": "0"}


def test_checkpoint_and_model_round_trip_and_resume_drops_the_round_in_flight(tmp_path):
    rec = RunRecorder(tmp_path)
    assert rec.load_checkpoint() is None
    rec.start({})
    for rnd in (1, 2, 3):
        rec.log_round({"round": rnd})
    rec.save_checkpoint(2, {"w": np.arange(3.0), "totals": {4: {"bytes_up": 1.0}}})
    rnd, state = rec.load_checkpoint()
    assert rnd == 2 and state["totals"] == {4: {"bytes_up": 1.0}}
    np.testing.assert_array_equal(state["w"], [0.0, 1.0, 2.0])
    resumed = RunRecorder(tmp_path)
    resumed.start({}, resume_round=2)                         # round 3 was in flight
    assert [r["round"] for r in read_rounds(tmp_path)] == [1, 2] == [r["round"] for r in resumed.rounds]
    assert read_summary(tmp_path)["rounds_completed"] == 2
    rec.write_model({"item_emb": np.ones((2, 3), np.float32)})
    with np.load(tmp_path / "model.npz") as model:
        assert model["item_emb"].shape == (2, 3) and model["item_emb"].dtype == np.float32
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_atomic_write_replaces_and_dumps_is_sorted_and_finite(tmp_path):
    atomic_write(tmp_path / "f.txt", "one")
    atomic_write(tmp_path / "f.txt", "two")
    assert (tmp_path / "f.txt").read_text() == "two" and len(list(tmp_path.iterdir())) == 1
    assert dumps({"b": [np.float64("nan"), (1, 2)], "a": np.int32(1)}) == \
        '{"a": 1, "b": [null, [1, 2]]}'


# --------------------------------------------------------------------------- round bookkeeping
def reply(d: int, status: str = "ok", **costs: float) -> DeviceReply:
    return DeviceReply(device_id=d, status=status, costs=costs,
                       metrics={"loss": float(d)} if status == "ok" else {})


def test_mean_metrics_skips_non_ok_and_non_finite_values():
    replies = [DeviceReply(0, metrics={"hr": 1.0, "nd": float("nan")}),
               DeviceReply(1, metrics={"hr": 0.0, "nd": 0.5}),
               DeviceReply(2, status="failed", metrics={"hr": 1.0})]
    assert mean_metrics(replies) == {"hr": 0.5, "nd": 0.5}
    assert summarise_eval(replies) == {"hr": 0.5, "nd": 0.5, "eval_devices": 2.0,
                                       "eval_failed": 1.0}


def test_fit_costs_sums_ok_devices_and_takes_the_slowest_as_round_latency():
    replies = [reply(0, bytes_up=10, bytes_down=100, compute_s=1.0, transfer_s=0.5, energy_j=2,
                     peak_mem_bytes=7),
               reply(1, bytes_up=30, bytes_down=100, compute_s=0.2, transfer_s=2.0, energy_j=1,
                     peak_mem_bytes=9),
               reply(2, "dropped"), reply(3, "failed", bytes_up=1000)]
    assert fit_costs(replies) == {
        "devices_ok": 2.0, "devices_dropped": 1.0, "devices_failed": 1.0, "devices_late": 0.0, "bytes_up": 40.0,
        "bytes_down": 200.0, "device_compute_s": 1.2, "sim_round_s": 2.2, "energy_j": 3.0,
        "peak_mem_bytes": 9.0, "train_loss": 0.5}
    assert math.isnan(fit_costs([reply(0, "dropped")])["train_loss"])


def run_log(monkeypatch) -> RoundLog:
    now = [100.0]
    monkeypatch.setattr("strategies.rounds.time.monotonic", lambda: now[0])
    log = RoundLog(num_rounds=3)                                            # t0 = 100
    times = [(101, 102, 104), (105, 107, 110), (111, 112, 113)]            # begin, fit, end
    metrics = [(0.2, 0.5), (0.4, 0.3), (0.3, 0.4)]                         # test hr, valid ndcg
    for rnd, ((t_begin, t_fit, t_end), (hr, valid)) in enumerate(zip(times, metrics), start=1):
        now[0] = t_begin
        log.begin(rnd, selected=2)
        now[0] = t_fit
        log.fit_done([reply(0, bytes_up=5), reply(1, "failed")], {"rows": 3.0})
        log.errors[-1] = f"device 1: boom {rnd}"
        log.eval_done({"test_hr@10": hr, "valid_ndcg@10": valid})
        now[0] = t_end
        log.end(rnd)
    now[0] = 130.0
    return log


def test_round_records_timings_and_summary(monkeypatch):
    log = run_log(monkeypatch)
    first = log.records[0]
    assert (first["round"], first["devices_selected"], first["agg_rows"]) == (1, 2, 3.0)
    assert (first["fit_wall_s"], first["round_wall_s"], first["elapsed_s"]) == (1.0, 3.0, 4.0)
    assert first["eta_s"] == 4.0 / 1 * 2 and "t_start" not in first
    assert [r["elapsed_s"] for r in log.records] == [4.0, 10.0, 13.0]
    assert log.records[-1]["eta_s"] == 0.0
    summary = log.summary("valid_ndcg@10")
    assert summary == {
        "status": "finished", "rounds": 3, "wall_s": 30.0,
        "final": {"test_hr@10": 0.3, "valid_ndcg@10": 0.4},
        "best_round": 1, "best": {"test_hr@10": 0.2, "valid_ndcg@10": 0.5},
        "select_metric": "valid_ndcg@10", "bytes_up": 15.0, "bytes_down": 0.0,
        "device_failures": 3.0, "device_dropouts": 0.0, "device_stragglers": 0.0,
        "first_errors": ["device 1: boom 1", "device 1: boom 2", "device 1: boom 3"]}


def test_progress_line_is_one_line_with_metrics_bytes_and_eta():
    rec = {"round": 2, "train_loss": 0.69312, "test_hr@10": 0.5, "test_ndcg@10": 0.25,
           "devices_ok": 30, "devices_dropped": 3, "devices_failed": 1, "bytes_up": 2048,
           "bytes_down": 3 * 1024 * 1024, "sim_round_s": 0.1234, "round_wall_s": 1.25,
           "elapsed_s": 10.4, "eta_s": 41.6}
    assert progress_line(rec, 10) == (
        "round 2/10 | loss 0.6931 | hr@10 0.5000 ndcg@10 0.2500 | devices 30 ok 3 dropped "
        "1 failed | up 2.0 KB down 3.0 MB | sim 0.12 s | wall 1.2 s | elapsed 10 s | ETA 42 s")
    no_eval = {**rec, "test_hr@10": None}
    del no_eval["test_hr@10"], no_eval["test_ndcg@10"]
    assert "| no eval |" in progress_line({**no_eval, "bytes_up": 12}, 10)
    assert "up 12 B" in progress_line({**no_eval, "bytes_up": 12}, 10)
