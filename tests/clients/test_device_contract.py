"""The device evaluation contract: a protocol implements ``score`` and names its
``scored_model``; the default ``evaluate`` / ``evaluate_many`` run the leave-one-out protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clients.device import DeviceLogic
from fedrec.federated import DeviceData
from fedrec.protocol import EVALUATE, DeviceReply, DeviceTask, device_rng

N_ITEMS = 8


class Devices:
    """Three devices over 8 items; device 2 has no validation item."""

    n_items = N_ITEMS

    def device(self, d: int) -> DeviceData:
        rows = {0: (np.array([0, 1]), 2, 3), 1: (np.array([4]), 5, 6), 2: (np.array([1]), -1, 7)}
        train, valid, test = rows[d]
        return DeviceData(d, train, valid, test, np.array([0, 1, 4]) + 0 * d, np.array([5, 6, 7]))


class Popularity(DeviceLogic):
    """Scores item i as broadcast["pop"][i] (the same for every device)."""

    scored_model = "global"

    def fit(self, task: DeviceTask) -> DeviceReply:
        raise NotImplementedError

    def score(self, task: DeviceTask, items: np.ndarray | None = None) -> np.ndarray:
        pop = task.broadcast["pop"]
        return pop.copy() if items is None else pop[items]


class NoScores(DeviceLogic):
    def fit(self, task: DeviceTask) -> DeviceReply:
        raise NotImplementedError


def task(d: int, pop: np.ndarray, state=None) -> DeviceTask:
    return DeviceTask(d, 1, EVALUATE, {"pop": pop}, {}, state, {}, device_rng(0, 1, d, EVALUATE))


POP = np.array([8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0])   # item i scores 8 - i


def test_default_evaluate_ranks_the_scored_candidates() -> None:
    logic = Popularity(cfg=None, fed=Devices())
    m = logic.evaluate(task(0, POP)).metrics
    # valid: item 2 vs valid negatives 5, 6, 7 -> rank 0; test: item 3 vs 0, 1, 4 -> rank 2
    assert m["valid_hr@10"] == 1.0 and m["valid_mrr@10"] == 1.0
    assert m["test_mrr@10"] == pytest.approx(1 / 3) and m["test_ndcg@20"] == pytest.approx(1 / math.log2(4))
    assert "valid_hr@10" not in logic.evaluate(task(2, POP)).metrics


def test_evaluate_many_equals_the_per_device_loop() -> None:
    logic = Popularity(cfg=None, fed=Devices())
    tasks = [task(d, POP) for d in range(3)]
    assert [r.metrics for r in logic.evaluate_many(tasks)] == [logic.evaluate(t).metrics for t in tasks]


def test_full_ranking_when_devices_hold_no_negatives() -> None:
    class Full(Devices):
        def device(self, d: int) -> DeviceData:
            data = super().device(d)
            return DeviceData(d, data.train_items, data.valid_item, data.test_item, None)

    m = Popularity(cfg=None, fed=Full()).evaluate(task(0, POP)).metrics
    # test item 3 among all items, 0 and 1 trained and 2 (validation) masked -> rank 0
    assert m["valid_hr@10"] == 1.0 and m["test_mrr@10"] == 1.0


def test_a_logic_without_scored_model_reports_nothing_and_keeps_its_state() -> None:
    state = {"x": np.ones(1)}
    r = NoScores(cfg=None, fed=Devices()).evaluate(task(0, POP, state))
    assert r.metrics == {} and r.state is state
    with pytest.raises(NotImplementedError, match="NoScores does not score items"):
        NoScores(cfg=None, fed=Devices()).score(task(0, POP))


def test_scored_model_must_be_a_known_name() -> None:
    with pytest.raises(TypeError, match="scored_model = 'local': use one of global, personalised, stale"):
        type("Bad", (Popularity,), {"scored_model": "local"})


def test_the_contract_is_still_importable_from_clients_device() -> None:
    # plug-ins written against clients.device keep working after the move to fedrec.protocol
    import clients.device as old
    import fedrec.protocol as new

    for name in ("END", "EVALUATE", "FIT", "Arrays", "DeviceReply", "DeviceTask", "device_rng"):
        assert getattr(old, name) is getattr(new, name)
