"""DCCL's CTR rows: a device's own rows (from its ``DeviceSamples``) and the cloud's rows
(from the logs it may read, ``SampleCloud.logs``), both cut into the same per-round intervals.

A row is a click (label 1) or a sampled item the user never touched (label 0) with the
user's history before that click. The DCCL half of each user's training events (part
``device``) is cut in time into ``n_rounds`` equal intervals: round r's data is the r-th.
Both halves derive the cut from positions alone, so the cloud's rows for round r are the
devices' rows of round r (same clicks, same histories; negatives drawn independently).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from fedrec.views.config import DEVICE, PRE
from fedrec.views.draws import Touched, draw_excluding, row_keys
from fedrec.views.samples import CloudLogs, DeviceSamples, resample_negatives

#: the cloud's own negative draws (independent of the devices' streams)
CLOUD_STREAM = 16


@dataclass(frozen=True, eq=False)
class CTRRows:
    """owner, item int64 [N]; label float32 [N]; history int64 [N, L] (-1 padded at the end)."""

    owner: np.ndarray
    item: np.ndarray
    label: np.ndarray
    history: np.ndarray

    def __len__(self) -> int:
        return len(self.item)

    def take(self, idx: np.ndarray) -> CTRRows:
        return CTRRows(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def concat(parts: list[CTRRows]) -> CTRRows:
        return CTRRows(*(np.concatenate([getattr(p, f.name) for p in parts])
                         for f in fields(CTRRows)))


def interval_of(k: np.ndarray, n: np.ndarray, n_rounds: int) -> np.ndarray:
    """Round (1..n_rounds) of the k-th of n events of a user's DCCL half: equal cuts in
    time order. k, n: int [M] -> int64 [M]"""
    return np.floor_divide(np.asarray(k, np.int64) * n_rounds, np.maximum(n, 1)) + 1


def with_negatives(owner: np.ndarray, item: np.ndarray, history: np.ndarray,
                   negatives: np.ndarray) -> CTRRows:
    """Each click followed by its negatives (same owner and history). negatives [M, k]"""
    k = negatives.shape[1]
    per = np.column_stack([item, negatives])                                   # [M, 1 + k]
    label = np.tile(np.r_[1.0, np.zeros(k)], len(item)).astype(np.float32)
    rep = np.repeat(np.arange(len(item)), 1 + k)
    return CTRRows(owner[rep], per.ravel(), label, history[rep])


def device_rows(dev: DeviceSamples, rnd: int, n_rounds: int, n_items: int, negatives: int,
                seed: int, epoch: int) -> CTRRows:
    """Device ``dev``'s rows of round ``rnd`` (its DCCL-half interval), negatives of ``epoch``
    (``resample_negatives``: a function of seed, device, event and epoch)."""
    in_half = np.flatnonzero(dev.part == DEVICE)                              # events [m]
    mine = in_half[interval_of(np.arange(len(in_half)), np.full(len(in_half), len(in_half)),
                               n_rounds) == rnd]
    s = dev.samples
    first = np.searchsorted(s.event, mine)                                    # positive rows
    neg = resample_negatives(dev, n_items, negatives, seed, epoch)[mine]      # [m, k]
    hist = s.history[first].astype(np.int64)
    return with_negatives(np.full(len(mine), dev.device_id, np.int64), dev.items[mine], hist, neg)


def round_rows(dev: DeviceSamples, rnd: int, n_rounds: int, n_items: int, negatives: int,
                seed: int, epochs: int) -> list[CTRRows]:
    """Device ``dev``'s rows of round ``rnd``, one copy per local epoch (negatives of epoch
    ``(rnd - 1) * epochs + e``), in event order."""
    return [device_rows(dev, rnd, n_rounds, n_items, negatives, seed, (rnd - 1) * epochs + e)
            for e in range(epochs)]


def needed_items(dev: DeviceSamples, rows: list[CTRRows]) -> np.ndarray:
    """The items whose embedding rows a device reads in a phase: its training ``rows``'
    items and histories, and its held-out events' histories and candidates.
    -> sorted unique int64 [n]"""
    parts = [a.ravel() for r in rows for a in (r.item, r.history)]
    parts += [a.ravel() for s in (dev.valid, dev.test) for a in (s.history, s.candidates)]
    ids = np.unique(np.concatenate(parts).astype(np.int64)) if parts else np.zeros(0, np.int64)
    return ids[ids >= 0]


def log_positions(owner: np.ndarray) -> np.ndarray:
    """Index of each row within its owner's run (rows grouped by owner). -> int64 [M]"""
    start = np.r_[0, np.flatnonzero(owner[1:] != owner[:-1]) + 1]
    return np.arange(len(owner)) - np.repeat(start, np.diff(np.r_[start, len(owner)]))


def log_histories(owner: np.ndarray, item: np.ndarray, length: int,
                  rows: np.ndarray) -> np.ndarray:
    """For each of ``rows`` (int [R]), its owner's ``length`` items before it, oldest first,
    -1 padded at the end (``fedrec.views.samples.histories`` over many owners at once).
    -> int64 [R, L]"""
    pos = log_positions(owner)[rows]
    first = rows - pos                                                        # owner's row 0
    start = np.maximum(pos - length, 0)
    idx = (first + start)[:, None] + np.arange(length)[None, :]               # [R, L]
    ok = idx < rows[:, None]
    return np.where(ok, item[np.minimum(idx, max(len(item) - 1, 0))], -1)


def cloud_rows(logs: CloudLogs, n_items: int, rnd: int, n_rounds: int, length: int,
               negatives: int, seed: int, epoch: int) -> CTRRows:
    """The cloud's rows from its logs: round 0 = the pre-training half (part ``pre``),
    round r >= 1 = every user's r-th interval of the DCCL half, round -1 = both halves (the
    centrally trained baselines)."""
    pos = log_positions(logs.owner)
    if rnd == -1:
        keep = (logs.part == PRE) | (logs.part == DEVICE)
    elif rnd == 0:
        keep = logs.part == PRE
    else:
        half = logs.part == DEVICE
        n_pre = np.bincount(logs.owner[logs.part == PRE], minlength=int(logs.owner.max()) + 1)
        n_half = np.bincount(logs.owner[half], minlength=len(n_pre))
        k = pos - n_pre[logs.owner]
        keep = half & (interval_of(k, n_half[logs.owner], n_rounds) == rnd)
    rows = np.flatnonzero(keep)
    hist = log_histories(logs.owner, logs.item, length, rows)
    touched = Touched.of(logs.owner, logs.item, n_items)
    keys = row_keys(seed, CLOUD_STREAM + (epoch << 8), logs.owner[rows], pos[rows])
    neg = draw_excluding(keys, logs.owner[rows], negatives, touched)
    return with_negatives(logs.owner[rows], logs.item[rows], hist, neg)




#: codes of the activity profile (data without user profiles): floor(log2(training events))
ACTIVITY_LEVELS = 8


def activity_codes(n_events: np.ndarray) -> np.ndarray:
    """The profile u of data without one (docs/dccl.md, decision 17): each user's training
    events (pre-training and DCCL halves) bucketed as min(floor(log2(n)), 7). Both halves know
    the count (the device from its own sequence, the cloud from its logs), and U(0, u) is no
    longer 0 for every user, so Theta learns in pre-training. int [U] -> int64 [U, 1]"""
    n = np.maximum(np.asarray(n_events, np.int64), 1)
    return np.minimum(np.floor(np.log2(n)), ACTIVITY_LEVELS - 1).astype(np.int64)[:, None]
