"""The device's two sample tables (Sec. 4.3, Fig. 5) as pure functions.

Local table: indices of the device's own samples, with the day each was logged. Samples
older than ``max_age`` days are deleted; on overflow the oldest go until the table is half
full. Ages 1..``valid_age`` validate the CTR model, older ones (up to ``max_age``) train it;
every one of them trains the classifier (label 1).

Outside table: filtered matched samples waiting for CTR training, with their classifier
scores; on overflow the lowest-scored go until it is half full; used samples are removed.
"""

from __future__ import annotations

import itertools

import numpy as np


def update_local(kept: np.ndarray, log_day: np.ndarray, last_day: int, today: int,
                 max_age: int, cap: int) -> np.ndarray:
    """The local table on day ``today``: the ``kept`` sample indices plus the samples logged
    after ``last_day`` and before ``today``, minus those older than ``max_age``; over ``cap``,
    the oldest dropped until ``cap // 2`` remain. log_day: int64 [S] day of each own sample.
    -> sorted int64 [n]"""
    new = np.flatnonzero((log_day > last_day) & (log_day < today))
    idx = np.union1d(np.asarray(kept, np.int64), new)
    idx = idx[today - log_day[idx] <= max_age]
    if len(idx) > cap:
        order = np.lexsort((idx, log_day[idx]))            # oldest first, then by index
        idx = np.sort(idx[order[len(idx) - cap // 2:]])
    return idx


def split_local(idx: np.ndarray, log_day: np.ndarray, today: int,
                valid_age: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices: age > valid_age, validation indices: age <= valid_age)."""
    young = today - log_day[idx] <= valid_age
    return idx[~young], idx[young]


def cap_outside(score: np.ndarray, cap: int) -> np.ndarray:
    """Positions to keep of a table with these scores: all when <= cap, else the
    ``cap // 2`` highest (ties: earlier first), in their original order. -> int64 [m]"""
    if len(score) <= cap:
        return np.arange(len(score))
    order = np.lexsort((np.arange(len(score)), -score))
    return np.sort(order[:cap // 2])


def sessions(waiting: int, trigger: int) -> list[tuple[int, int]]:
    """CTR training sessions over the waiting filtered samples: one each time ``trigger``
    samples wait, and one for the rest when the day's batches are exhausted. -> [(lo, hi)]"""
    cuts = list(range(0, waiting, trigger)) + [waiting]
    return [(a, b) for a, b in itertools.pairwise(cuts)]
