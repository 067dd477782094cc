"""strategies.base: seeded sampling, shard routing, and the Flower hooks on hand-made
FitRes/EvaluateRes (no Ray, no server loop)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from flwr.common import (
    Code,
    EvaluateRes,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)

from clients.device import DeviceLogic
from fedrec.config import parse_run_config
from fedrec.errors import FedrecError
from fedrec.payload import pack, scoped, split_scopes, unpack
from fedrec.protocol import DeviceReply
from fedrec.results import RunRecorder, read_rounds, read_summary
from strategies.base import DeviceStrategy, route, sample_devices
from strategies.faults import WorkerLost

OK = Status(Code.OK, "")


@dataclass(frozen=True)
class Fed:
    n_devices: int = 10
    n_items: int = 4

    def cloud(self) -> Fed:
        return self


@dataclass(frozen=True)
class Proxy:
    cid: str


class Manager:
    """The three ClientManager calls the base strategy makes."""

    def __init__(self, n: int) -> None:
        self.proxies = {f"c{i}": Proxy(f"c{i}") for i in range(n)}
        self.waited: list[int] = []

    def num_available(self) -> int:
        return len(self.proxies)

    def wait_for(self, num_clients: int, timeout: int) -> bool:
        self.waited.append(num_clients)
        return False

    def all(self) -> dict[str, Proxy]:
        return self.proxies


class SumStrategy(DeviceStrategy):
    """Adds the devices' "g" uploads to "w"; sends device d the array [d] of its own."""

    name = "sum"
    device_cls = DeviceLogic

    def init_global(self) -> dict[str, np.ndarray]:
        return {"w": np.zeros(2)}

    def fit_own(self, rnd: int, device_ids: list[int]) -> dict[int, dict[str, np.ndarray]]:
        return {d: {"id": np.array([d])} for d in device_ids}

    def aggregate(self, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        self.aggregated = [r.device_id for r in replies]
        self.global_arrays["w"] = self.global_arrays["w"] + sum(r.upload["g"] for r in replies)
        return {"n": float(len(replies))}


def make(tmp_path, **flat) -> SumStrategy:
    cfg = parse_run_config({"devices-per-client": 4, "num-rounds": 2, "quiet": True, **flat})
    recorder = RunRecorder(tmp_path / "run")
    recorder.start({})
    return SumStrategy(cfg=cfg, fed=Fed(), recorder=recorder)


def payloads(instructions) -> dict[str, tuple[dict, dict]]:
    return {p.cid: unpack(parameters_to_ndarrays(ins.parameters)) for p, ins in instructions}


# --------------------------------------------------------------------------- pure helpers
def test_sample_devices_is_seeded_sorted_and_sized():
    got = sample_devices(10, 0.3, 0, 1)
    assert got == sample_devices(10, 0.3, 0, 1) and got == sorted(got) and len(got) == 3
    rng = np.random.default_rng([0, 1, 7])
    assert got == sorted(int(d) for d in rng.choice(10, size=3, replace=False))
    assert len({tuple(sample_devices(10, 0.3, 0, r)) for r in range(1, 9)}) > 1  # varies by round
    assert sample_devices(10, 0.3, 1, 1) != got or sample_devices(10, 0.3, 2, 1) != got
    assert sample_devices(10, 1.0, 0, 5) == list(range(10))
    assert sample_devices(10, 0.01, 0, 5) == sample_devices(10, 0.01, 0, 5) and \
        len(sample_devices(10, 0.01, 0, 5)) == 1                                   # at least one
    assert len(sample_devices(10, 0.25, 0, 1)) == 2                                # round(2.5) = 2


@pytest.mark.parametrize("n_clients", [1, 2, 3, 5, 8])
def test_route_keeps_shards_whole_and_covers_every_device(n_clients):
    ids = [0, 1, 2, 5, 6, 9, 12, 13, 17, 31]
    slots = route(ids, 4, n_clients)
    assert sorted(d for devs in slots.values() for d in devs) == ids
    shard_slot = {}
    for slot, devs in slots.items():
        assert devs == sorted(devs) and 0 <= slot < n_clients
        for d in devs:
            assert shard_slot.setdefault(d // 4, slot) == slot     # one slot per shard
    assert slots == {s: [d for d in ids if (d // 4) % n_clients == s] for s in slots}


def test_the_cloud_waits_for_one_client_per_shard_unless_told_how_many(tmp_path):
    assert make(tmp_path / "a").expected_clients == 3                  # 10 devices, shards of 4
    assert make(tmp_path / "b", **{"flower-clients": 2}).expected_clients == 2


# --------------------------------------------------------------------------- Flower hooks
def test_configure_fit_sends_each_client_its_shards(tmp_path):
    strat = make(tmp_path)
    msgs = payloads(strat.configure_fit(1, None, Manager(2)))
    assert sorted(msgs) == ["c0", "c1"]
    arrays0, meta0 = msgs["c0"]
    # 3 shards of 4 on 2 clients: contiguous blocks (shards 0-1, then shard 2)
    assert meta0["devices"] == list(range(8)) and msgs["c1"][1]["devices"] == [8, 9]
    assert {k: meta0[k] for k in ("round", "kind", "shard_size", "config")} == \
        {"round": 1, "kind": "fit", "shard_size": 4, "config": {}}
    assert meta0["run"] == strat.run_id and "state_dir" not in meta0   # the cloud names no folder
    scopes = split_scopes(arrays0)
    assert sorted(scopes) == ["*", *map(str, range(8))]
    np.testing.assert_array_equal(scopes["*"]["w"], [0.0, 0.0])
    np.testing.assert_array_equal(scopes["7"]["id"], [7])


@pytest.mark.parametrize("n_clients", [1, 2, 3])
def test_the_same_devices_are_sent_whatever_the_number_of_clients(tmp_path, n_clients):
    strat = make(tmp_path, **{"fraction-fit": 0.5})
    msgs = payloads(strat.configure_fit(2, None, Manager(n_clients)))
    sent = sorted(d for _, meta in msgs.values() for d in meta["devices"])
    assert sent == sample_devices(10, 0.5, 0, 2)


def test_fewer_clients_than_shards_waits_then_merges_cohorts(tmp_path):
    manager = Manager(2)                     # 10 devices / 4 per client = 3 expected
    msgs = payloads(make(tmp_path).configure_fit(1, None, manager))
    assert manager.waited == [3]
    assert sorted(d for _, m in msgs.values() for d in m["devices"]) == list(range(10))
    manager = Manager(3)
    make(tmp_path).configure_fit(1, None, manager)
    assert manager.waited == []


def fit_res(replies: dict[int, dict], uploads: dict[int, dict]) -> FitRes:
    arrays = {}
    for d, up in uploads.items():
        arrays.update(scoped(d, up))
    params = ndarrays_to_parameters(pack(arrays, {"devices": {str(d): r for d, r in replies.items()}}))
    return FitRes(status=OK, parameters=params, num_examples=0, metrics={})


def ok(n: int, up: float = 10.0) -> dict:
    return {"status": "ok", "error": "", "n": n, "metrics": {"loss": 0.5},
            "costs": {"bytes_up": up, "bytes_down": 100.0}}


def test_aggregate_fit_sorts_replies_and_counts_statuses(tmp_path):
    strat = make(tmp_path)
    proxies = [p for p, _ in strat.configure_fit(1, None, Manager(3))]   # c0: 0-3, c1: 4-7, c2: 8-9
    res_c1 = fit_res({7: ok(1), 4: ok(1), 5: {"status": "dropped"}, 6: ok(1)},
                     {7: {"g": np.array([7.0, 0])}, 4: {"g": np.array([4.0, 0])},
                      6: {"g": np.array([6.0, 0])}})
    res_c0 = fit_res({0: ok(1), 1: {"status": "failed", "error": "boom", "n": 0}, 2: ok(1), 3: ok(1)},
                     {d: {"g": np.array([0.0, d])} for d in (0, 2, 3)})
    failure = RuntimeError("Message TTL expired")   # Flower names no client: c2 is the one missing
    _, metrics = strat.aggregate_fit(1, [(proxies[1], res_c1), (proxies[0], res_c0)], [failure])
    assert strat.aggregated == [0, 2, 3, 4, 6, 7] and metrics == {"n": 6.0}
    np.testing.assert_array_equal(strat.global_arrays["w"], [17.0, 5.0])
    cur = strat.log._cur
    assert (cur["devices_ok"], cur["devices_dropped"], cur["devices_failed"]) == (6, 1, 3)
    assert cur["bytes_up"] == 60.0 and cur["bytes_down"] == 600.0 and cur["agg_n"] == 6.0
    assert strat.totals[9]["rounds_failed"] == 1 and strat.totals[4]["bytes_up"] == 10.0
    assert strat.log.errors[0] == "device 1: boom"
    assert strat.log.errors[1:] == [f"device {d}: client did not answer: RuntimeError: Message TTL "
                                    "expired" for d in (8, 9)]


def test_a_dead_simulation_worker_abandons_the_round_before_aggregating(tmp_path):
    strat = make(tmp_path)
    proxies = [p for p, _ in strat.configure_fit(1, None, Manager(3))]
    res = fit_res({d: ok(1) for d in range(4)}, {d: {"g": np.array([1.0, 0])} for d in range(4)})
    died = ValueError("Message contains an Error (reason: ray.exceptions.ActorDiedError: The actor "
                      "died unexpectedly before finishing this task.)")
    with pytest.raises(WorkerLost, match=r"^round 1: a simulation worker died while running 6 "):
        strat.aggregate_fit(1, [(proxies[0], res)], [died, died])
    assert not hasattr(strat, "aggregated")


def test_a_round_no_client_answered_fails_with_the_reason_and_a_hint(tmp_path):
    strat = make(tmp_path)
    strat.configure_fit(1, None, Manager(3))
    with pytest.raises(FedrecError, match=r"^round 1: none of the 3 Flower clients answered "
                                          r"\(RuntimeError: Message TTL expired\); raise round-timeout-s"):
        strat.aggregate_fit(1, [], [RuntimeError("Message TTL expired")] * 3)


def test_a_diverged_model_stops_the_run(tmp_path):
    strat = make(tmp_path)
    proxies = [p for p, _ in strat.configure_fit(1, None, Manager(1))]
    res = fit_res({d: ok(1) for d in range(10)}, {d: {"g": np.array([np.inf, 0])} for d in range(10)})
    with pytest.raises(FedrecError, match=r"^round 1: the model diverged \(non-finite values in w "
                                          r"after aggregation\); lower lr or server-lr$"):
        strat.aggregate_fit(1, [(proxies[0], res)], [])


def test_a_round_where_every_device_failed_stops_the_run(tmp_path):
    strat = make(tmp_path)
    proxies = [p for p, _ in strat.configure_fit(1, None, Manager(1))]
    bad = fit_res({0: {"status": "failed", "error": "KeyError: 'x'"}, 1: {"status": "dropped"}}, {})
    with pytest.raises(FedrecError, match="round 1: all 1 devices that ran failed; first error: "
                                          "device 0: KeyError: 'x'"):
        strat.aggregate_fit(1, [(proxies[0], bad)], [])


def test_all_devices_dropping_out_is_not_an_error(tmp_path):
    strat = make(tmp_path)
    proxies = [p for p, _ in strat.configure_fit(1, None, Manager(1))]
    _, metrics = strat.aggregate_fit(1, [(proxies[0], fit_res({0: {"status": "dropped"}}, {}))], [])
    assert metrics == {} and not hasattr(strat, "aggregated")


def eval_res(metrics: dict[int, dict]) -> EvaluateRes:
    info = {str(d): {"status": "ok", "metrics": m} for d, m in metrics.items()}
    return EvaluateRes(status=OK, loss=0.0, num_examples=len(metrics),
                       metrics={"devices": json.dumps(info)})


def eval_results(instructions, metrics_of) -> list:
    """Every client's EvaluateRes for the devices it was sent."""
    return [(p, eval_res({d: metrics_of(d) for d in unpack(parameters_to_ndarrays(
        ins.parameters))[1]["devices"]})) for p, ins in instructions]


def test_an_evaluation_that_missed_devices_stops_the_run(tmp_path):
    strat = make(tmp_path)
    strat.configure_fit(1, None, Manager(3))
    instructions = strat.configure_evaluate(1, None, Manager(3))
    results = eval_results(instructions[:2], lambda d: {"test_hr@10": 1.0})   # c2 never answers
    with pytest.raises(FedrecError, match=r"^round 1: only 8 of 10 devices were evaluated; first "
                                          r"error: device 8: client did not answer: no reply$"):
        strat.aggregate_evaluate(1, results, [])


def test_evaluation_rounds_logging_and_summary(tmp_path):
    strat = make(tmp_path, **{"eval-every": 2, "num-rounds": 3})
    strat.configure_fit(1, None, Manager(3))
    assert strat.configure_evaluate(1, None, Manager(3)) == []        # not an eval round
    assert [r["round"] for r in read_rounds(tmp_path / "run")] == [1]
    strat.configure_fit(2, None, Manager(3))
    msgs = payloads(strat.configure_evaluate(2, None, Manager(3)))
    assert sorted(d for _, m in msgs.values() for d in m["devices"]) == list(range(10))
    assert {m["kind"] for _, m in msgs.values()} == {"evaluate"}
    round2 = lambda d: {"test_hr@10": float(d < 5), "valid_ndcg@10": 0.5}
    instructions = strat.configure_evaluate(2, None, Manager(3))
    _, metrics = strat.aggregate_evaluate(2, eval_results(instructions, round2), [])
    assert metrics == {"test_hr@10": 0.5, "valid_ndcg@10": 0.5, "eval_devices": 10.0,
                       "eval_failed": 0.0}
    assert read_rounds(tmp_path / "run")[-1]["test_hr@10"] == 0.5
    assert read_summary(tmp_path / "run")["status"] == "running"   # final after the last round
    strat.configure_fit(3, None, Manager(3))
    instructions = strat.configure_evaluate(3, None, Manager(3))   # the last round always is
    assert instructions != []
    round3 = lambda d: {"test_hr@10": 1.0, "valid_ndcg@10": 0.25}
    strat.aggregate_evaluate(3, eval_results(instructions, round3), [])
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "finished" and summary["rounds"] == 3
    assert summary["final"] == {"test_hr@10": 1.0, "valid_ndcg@10": 0.25}
    assert summary["best_round"] == 2   # chosen by the validation metric, not by test
    assert summary["best"] == {"test_hr@10": 0.5, "valid_ndcg@10": 0.5}
