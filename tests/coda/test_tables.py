"""The device's sample tables (Sec. 4.3): lifecycle, caps, halving, sessions."""

from __future__ import annotations

import numpy as np

from fedrec.coda.tables import cap_outside, sessions, split_local, update_local


def test_new_samples_enter_and_old_ones_leave():
    day = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    got = update_local(np.array([0, 1, 2]), day, last_day=2, today=9, max_age=7, cap=100)
    assert got.tolist() == [2, 3, 4, 5, 6, 7, 8]             # ages 7..1; day 9 is today's
    first = update_local(np.zeros(0, np.int64), day, last_day=-(1 << 62), today=5, max_age=7, cap=100)
    assert first.tolist() == [0, 1, 2, 3, 4]


def test_overflow_drops_the_oldest_until_half_full():
    day = np.repeat(np.arange(6), 5)                          # 30 samples, 5 a day
    got = update_local(np.zeros(0, np.int64), day, -1, today=6, max_age=7, cap=20)
    assert len(got) == 10 and got.tolist() == list(range(20, 30))


def test_young_samples_validate_older_ones_train():
    day = np.array([1, 2, 3, 4, 5, 6])
    train, valid = split_local(np.arange(6), day, today=7, valid_age=3)
    assert train.tolist() == [0, 1, 2] and valid.tolist() == [3, 4, 5]   # ages 6,5,4 | 3,2,1


def test_outside_overflow_keeps_the_best_scored_half_in_order():
    score = np.array([0.3, 0.9, 0.2, 0.8, 0.5, 0.9])
    assert cap_outside(score, 6).tolist() == list(range(6))
    assert cap_outside(score, 5).tolist() == [1, 5]           # 5 // 2 = 2 best (tie: first)


def test_training_starts_every_trigger_samples_and_at_the_end():
    assert sessions(250, 100) == [(0, 100), (100, 200), (200, 250)]
    assert sessions(100, 100) == [(0, 100)]
    assert sessions(0, 100) == []
