"""A cohort's plan, schedule and test histories by hand: the mini-batches ``train`` draws,
laid out step by step (devices still training are a prefix), item positions among a
device's own rows, right-aligned histories."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fedrec.c3drec.cohort import Schedule, device_plan, histories, local_ids, personal_rows
from fedrec.c3drec.train import SparseSpec, TrainSpec, make_model, next_click_events, pack, train

SPEC = TrainSpec(epochs=2, batch_events=4, lr=0.01, max_len=3)


def test_device_plan_draws_what_train_draws() -> None:
    sessions = [np.array([1, 2, 3, 4, 5, 6, 7]), np.array([8, 9]), np.array([5])]
    rng = np.random.default_rng(7)
    plan = device_plan(sessions, SPEC, copy.deepcopy(rng))
    assert [p.tolist() for p in plan.pieces] == [[1, 2, 3, 4], [4, 5, 6, 7], [8, 9]]
    lengths, r = np.array([4, 4, 2]), copy.deepcopy(rng)
    want = [b.tolist() for _ in range(2) for b in pack(lengths, 4, r.permutation(3))]
    assert [b.tolist() for b in plan.steps] == want
    assert plan.events == 2 * 7 and plan.last_epoch == len(want) // 2
    torch.set_num_threads(1)
    after_train = copy.deepcopy(rng)
    train(make_model(10, 2, 3, seed=0), sessions, SPEC, SparseSpec(), after_train)
    after_plan = copy.deepcopy(rng)
    device_plan(sessions, SPEC, after_plan)
    assert after_plan.random() == after_train.random()               # same draws consumed


def test_a_device_without_pieces_draws_nothing() -> None:
    rng = np.random.default_rng(0)
    plan = device_plan([np.array([3])], SPEC, rng)
    assert plan.steps == [] and plan.events == 0
    assert rng.random() == np.random.default_rng(0).random()


def test_local_ids_find_items_among_each_devices_rows() -> None:
    rows = [np.array([0, 4, 9]), np.array([2, 4])]
    got = local_ids(np.array([4, 9, 4, 0, 2, 9]), np.array([0, 0, 1, 1, 1, 1]), rows, 10)
    assert got.tolist() == [1, 2, 1, -1, 0, -1]
    assert personal_rows([np.array([5, 2]), np.array([2])], np.array([7])).tolist() == [2, 5, 7]


def test_schedule_steps_by_hand() -> None:
    spec = TrainSpec(epochs=1, batch_events=3, lr=0.01, max_len=3)
    plans = [device_plan([np.array([10, 11, 12, 13, 14])], spec, np.random.default_rng(0)),
             device_plan([np.array([20, 21])], spec, np.random.default_rng(0))]
    rows = [personal_rows([np.array([10, 11, 12, 13, 14])]), np.array([20, 21])]
    sched = Schedule(plans, rows, 30)                      # device 0: 2 steps, device 1: 1
    assert sched.n_steps == 2
    first = [p.tolist() for p in (plans[0].pieces[i] for i in plans[0].steps[0])]
    st = sched[0]
    assert st.inp.shape == (2, 1, 3) and st.count.tolist() == [len(first[0]) - 1, 1]
    n0 = len(first[0]) - 1
    assert st.inp[0, 0, :n0].tolist() == [x - 10 for x in first[0][:-1]]
    assert st.target.tolist() == first[0][1:] + [21]
    assert st.device.tolist() == [0] * n0 + [1] and st.slot.tolist() == [*range(n0), 0]
    assert st.inp[1, 0].tolist() == [0, 0, 0] and st.valid[1, 0].tolist() == [True, False, False]
    assert len(sched[1].count) == 1                         # only device 0 is left
    with pytest.raises(ValueError, match="sorted"):
        Schedule(plans[::-1], rows[::-1], 30)


def test_histories_are_right_aligned_positions_among_own_rows() -> None:
    hist, _ = next_click_events([np.array([3, 8, 5, 9])], 2)           # left-padded, L = 2
    h = histories([hist.numpy(), np.zeros((0, 2), np.int64)], [np.array([3, 5]), np.zeros(0, np.int64)],
                  10)
    assert h.length.tolist() == [[1, 2, 2], [0, 0, 0]]
    assert h.items[0].tolist() == [[3, 0], [3, 8], [8, 5]]
    assert h.local[0].tolist() == [[0, -1], [0, -1], [-1, 1]]        # 8 is not its own row
    assert (h.local[1] == -1).all()
