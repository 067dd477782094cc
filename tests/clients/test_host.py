"""clients.host.DeviceHost on a fake DeviceLogic: routing of payloads, dropouts, failures,
costs from real serialized sizes, private state across rounds. No Flower server, no Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clients.device import DeviceLogic
from clients.host import DeviceHost, Faults
from fedrec import devices as dev
from fedrec.payload import BROADCAST, nbytes, pack, scoped, split_scopes, unpack
from fedrec.protocol import EVALUATE, FIT, DeviceReply, DeviceTask, device_rng

SEED = 3
HALF = dev.DeviceProfile(name="half", flops_per_s=1e9, ram_bytes=2**30, uplink_bps=8e6,
                         downlink_bps=16e6, availability=0.5, battery_budget_j=1e3,
                         energy_per_flop_j=1e-9, energy_per_byte_up_j=1e-6,
                         energy_per_byte_down_j=1e-7)
ALWAYS = dev.DeviceProfile(**{**HALF.__dict__, "name": "always", "availability": 1.0})
BROADCAST_ARRAYS = {"table": np.zeros((4, 3), np.float32)}   # 128 + 48 bytes


class Counter(DeviceLogic):
    """Uploads a [2] float32 vector, counts its rounds in private state, fails on request."""

    def __init__(self, fail: tuple[int, ...] = ()) -> None:
        super().__init__(cfg=None, fed=None)
        self.fail = set(fail)
        self.batches: list[list[int]] = []

    def fit(self, task: DeviceTask) -> DeviceReply:
        if task.device_id in self.fail:
            raise RuntimeError(f"bad device {task.device_id}")
        count = 0 if task.state is None else int(task.state["count"][0])
        upload = {"delta": np.full(2, task.device_id, np.float32), **task.own}
        return DeviceReply(device_id=task.device_id, upload=upload,
                           state={"count": np.array([count + 1])},
                           metrics={"draw": float(task.rng.random()), "seen": float(count)},
                           num_examples=task.device_id + 1, flops=2e6, peak_mem_bytes=1e3)

    def evaluate(self, task: DeviceTask) -> DeviceReply:
        return DeviceReply(device_id=task.device_id, metrics={"hr": float(task.device_id % 2)})

    def run_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        self.batches.append([t.device_id for t in tasks])
        return super().run_many(tasks)


def message(ids, rnd, state_dir, own=None, kind=FIT):
    arrays = scoped(BROADCAST, BROADCAST_ARRAYS)
    for d, arrs in (own or {}).items():
        arrays.update(scoped(d, arrs))
    meta = {"devices": ids, "round": rnd, "kind": kind, "shard_size": 4,
            "run": "run", "config": {}}
    return pack(arrays, meta)


def fit(host: DeviceHost, ids, rnd, state_dir, own=None):
    host.state_root = state_dir          # the host's own choice (here: the test's folder)
    ndarrays, n, metrics = host.fit(message(ids, rnd, state_dir, own), {})
    arrays, meta = unpack(ndarrays)
    assert metrics == {}
    return split_scopes(arrays), meta["devices"], n


def test_fit_returns_each_devices_upload_and_report(tmp_path):
    host = DeviceHost(Counter(), lambda d: ALWAYS, SEED, dropouts=True)
    own = {2: {"extra": np.ones(5, np.int64)}}
    scopes, info, n = fit(host, [0, 2, 5], 1, tmp_path, own)
    assert sorted(scopes) == ["0", "2", "5"] and list(info) == ["0", "2", "5"]
    np.testing.assert_array_equal(scopes["5"]["delta"], [5, 5])
    np.testing.assert_array_equal(scopes["2"]["extra"], np.ones(5))  # own arrays reached device 2
    assert n == 1 + 3 + 6
    assert {k: info["2"][k] for k in ("status", "error", "n")} == {"status": "ok", "error": "", "n": 3}
    assert info["0"]["metrics"]["draw"] == device_rng(SEED, 1, 0, FIT).random()


def test_costs_are_real_serialized_sizes_and_profile_times(tmp_path):
    host = DeviceHost(Counter(), lambda d: ALWAYS, SEED)
    own = {2: {"extra": np.ones(5, np.int64)}}
    _, info, _ = fit(host, [0, 2], 1, tmp_path, own)
    down0 = 128 + 48                       # the broadcast table only
    down2 = down0 + 128 + 40               # + its own int64[5]
    up0, up2 = 128 + 8, 128 + 8 + 128 + 40  # delta float32[2] (+ echoed extra)
    assert nbytes(BROADCAST_ARRAYS) == down0
    c0, c2 = info["0"]["costs"], info["2"]["costs"]
    assert (c0["bytes_down"], c0["bytes_up"], c2["bytes_down"], c2["bytes_up"]) == \
        (down0, up0, down2, up2)
    assert c0["flops"] == 2e6 and c0["compute_s"] == pytest.approx(2e-3)
    assert c0["transfer_s"] == pytest.approx(8 * up0 / 8e6 + 8 * down0 / 16e6)
    assert c0["energy_j"] == pytest.approx(2e6 * 1e-9 + up0 * 1e-6 + down0 * 1e-7)
    assert c0["peak_mem_bytes"] == 1e3 and c0["mem_ok"] == 1.0


def test_dropouts_are_a_function_of_seed_round_and_device_only(tmp_path):
    ids = list(range(12))
    expect = {d for d in ids if not dev.is_available(HALF, SEED, 4, d)}
    assert 0 < len(expect) < len(ids)                      # the case is not trivial
    logic = Counter()
    _, whole, _ = fit(DeviceHost(logic, lambda d: HALF, SEED), ids, 4, tmp_path / "a")
    _, part1, _ = fit(DeviceHost(Counter(), lambda d: HALF, SEED), ids[:5], 4, tmp_path / "b")
    _, part2, _ = fit(DeviceHost(Counter(), lambda d: HALF, SEED), ids[5:], 4, tmp_path / "b")
    dropped = {int(d) for d, r in whole.items() if r["status"] == "dropped"}
    assert dropped == expect
    assert {**part1, **part2} == whole                      # same reports in any cohort split
    assert logic.batches == [[d for d in ids if d not in expect]]  # dropped devices never run
    assert all(whole[str(d)]["costs"] == {} for d in expect)


def test_no_dropouts_when_disabled_or_when_evaluating(tmp_path):
    _, info, _ = fit(DeviceHost(Counter(), lambda d: HALF, SEED, dropouts=False),
                     list(range(12)), 4, tmp_path)
    assert {r["status"] for r in info.values()} == {"ok"}
    host = DeviceHost(Counter(), lambda d: HALF, SEED, dropouts=True)
    host.state_root = tmp_path
    loss, n, metrics = host.evaluate(message(list(range(12)), 4, tmp_path, kind=EVALUATE), {})
    report = json.loads(metrics["devices"])
    assert loss == 0.0 and n == 12 and {r["status"] for r in report.values()} == {"ok"}
    assert [report[str(d)]["metrics"]["hr"] for d in range(4)] == [0.0, 1.0, 0.0, 1.0]
    assert report["1"]["costs"]["bytes_up"] == 0.0          # evaluation uploads nothing


def test_a_failing_device_is_isolated_and_the_cohort_continues(tmp_path):
    logic = Counter(fail=(2,))
    scopes, info, n = fit(DeviceHost(logic, lambda d: ALWAYS, SEED), [0, 1, 2, 3], 1, tmp_path)
    assert info["2"]["status"] == "failed" and info["2"]["error"] == "RuntimeError: bad device 2"
    assert info["2"]["costs"] == {} and info["2"]["n"] == 0
    assert [info[str(d)]["status"] for d in (0, 1, 3)] == ["ok", "ok", "ok"]
    assert sorted(scopes) == ["0", "1", "3"] and n == 1 + 2 + 4
    assert logic.batches == [[0, 1, 2, 3], [0], [1], [2], [3]]  # cohort first, then one by one


def test_private_state_persists_across_rounds_in_shard_files(tmp_path):
    host = DeviceHost(Counter(), lambda d: HALF, SEED)
    seen = {}
    for rnd in (1, 2, 3):
        _, info, _ = fit(host, [0, 1, 5], rnd, tmp_path)
        for d, r in info.items():
            if r["status"] == "ok":
                assert r["metrics"]["seen"] == seen.get(d, 0)   # rounds this device trained
                seen[d] = seen.get(d, 0) + 1
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["shard-000000", "shard-000001"]
    # a fresh host (another Flower client) picks the state up from the files
    _, info, _ = fit(DeviceHost(Counter(), lambda d: ALWAYS, SEED), [0, 1, 5], 9, tmp_path)
    assert {d: r["metrics"]["seen"] for d, r in info.items()} == \
        {d: float(seen.get(d, 0)) for d in ("0", "1", "5")}


def test_get_parameters_is_empty():
    assert DeviceHost(Counter(), lambda d: ALWAYS, SEED).get_parameters({}) == []


def injected(kind: str, rate: float, rnd: int, ids) -> set[int]:
    return {d for d in ids if dev.injected_fault(kind, rate, SEED, rnd, d)}


def test_injected_faults_equal_a_round_without_those_devices(tmp_path):
    ids = list(range(40))
    crash, gone = injected("crash", 0.3, 2, ids), injected("unavailable", 0.3, 2, ids)
    survivors = [d for d in ids if d not in crash | gone]
    assert crash and gone and crash - gone and 10 < len(survivors) < 40   # not a trivial case
    faulty = DeviceHost(Counter(), lambda d: ALWAYS, SEED, faults=Faults(unavailable=0.3, crash=0.3))
    scopes, info, n = fit(faulty, ids, 2, tmp_path / "a")
    clean_scopes, clean_info, clean_n = fit(DeviceHost(Counter(), lambda d: ALWAYS, SEED),
                                            survivors, 2, tmp_path / "b")
    assert scopes.keys() == clean_scopes.keys() and n == clean_n
    for d in survivors:
        np.testing.assert_array_equal(scopes[str(d)]["delta"], clean_scopes[str(d)]["delta"])
        assert info[str(d)] == clean_info[str(d)]
    assert {int(d) for d, r in info.items() if r["status"] == "dropped"} == gone
    crashed = {int(d) for d, r in info.items() if r["status"] == "failed"}
    assert crashed == crash - gone
    assert {info[str(d)]["error"] for d in crashed} == {"injected crash after training (fault-crash)"}
    # a crashed device keeps its old state: next round it has still trained 0 rounds
    _, again, _ = fit(DeviceHost(Counter(), lambda d: ALWAYS, SEED), sorted(crashed), 3, tmp_path / "a")
    assert {r["metrics"]["seen"] for r in again.values()} == {0.0}


def test_stragglers_past_the_deadline_are_late_and_send_nothing(tmp_path):
    slow = dev.DeviceProfile(**{**ALWAYS.__dict__, "name": "slow", "flops_per_s": 1e6})  # 2 s
    host = DeviceHost(Counter(), lambda d: slow if d % 2 else ALWAYS, SEED, faults=Faults(deadline_s=1.0))
    scopes, info, n = fit(host, [0, 1, 2, 3], 1, tmp_path)
    assert sorted(scopes) == ["0", "2"] and n == 1 + 3
    assert [info[str(d)]["status"] for d in range(4)] == ["ok", "late", "ok", "late"]
    assert info["1"]["error"].startswith("straggler: 2 simulated s > deadline-s 1")
    assert info["1"]["costs"] == {}
