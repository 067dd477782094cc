"""A cohort's on-device fine-tuning laid out for one batched computation (numpy only).

Each device's mini-batches are drawn exactly as ``fedrec.c3drec.train.train`` draws them
(the same pieces, the same ``rng.permutation`` per epoch, the same ``pack``), so a batched
step s gives device i the batch the per-device loop gives it at its step s. Devices are
sorted by their number of steps (most first), so the devices still training at step s are a
prefix ``[0, A_s)`` of the cohort and a step works on views, not gathers.

Item tables are held *compactly*: device i keeps its own copy of only the rows it may change
or reads with a personal value (``rows[i]``: its clicked items, plus rows where its stored
delta is nonzero); every other row is the downloaded global one.

Shapes: D devices, S steps, A active devices at a step, B pieces per device and step (padded),
T transitions per piece (padded), M targets of a step (all devices, unpadded), R personal
rows per device (padded), E test events per device (padded), L history length.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedrec.c3drec.train import TrainSpec, pack, pieces


@dataclass(frozen=True)
class DeviceInput:
    """One device's part of a cohort: its training and test sessions, stored state (None
    the first time), its rng (``task.rng``) and, in pull mode, its candidates [C] and their
    downloaded item embeddings [C, H] (None: the model's own rows)."""

    train: Sequence[np.ndarray]
    test: Sequence[np.ndarray]
    state: Mapping[str, np.ndarray] | None
    rng: np.random.Generator
    cand: np.ndarray | None = None
    cand_emb: np.ndarray | None = None


@dataclass(frozen=True)
class DevicePlan:
    """One device's fine-tuning as ``train`` runs it: its pieces (item ids), the piece
    indices of every mini-batch (all epochs, in order), the first step of the last epoch
    (its loss is the one reported) and the targets seen over all epochs."""

    pieces: list[np.ndarray]
    steps: list[np.ndarray]
    last_epoch: int
    events: int


def device_plan(sessions: Sequence[np.ndarray], spec: TrainSpec,
                rng: np.random.Generator) -> DevicePlan:
    """The mini-batches ``train(model, sessions, spec, ...)`` would draw from ``rng`` (and the
    same draws: ``rng`` ends where ``train`` leaves it; no pieces, no draws)."""
    ps = pieces(sessions, min(spec.max_len, spec.batch_events))
    if not ps:
        return DevicePlan([], [], 0, 0)
    lengths = np.array([len(p) for p in ps])
    steps: list[np.ndarray] = []
    last = 0
    for _ in range(spec.epochs):
        last = len(steps)
        steps += pack(lengths, spec.batch_events, rng.permutation(len(ps)))
    return DevicePlan(ps, steps, last, int((lengths - 1).sum()) * spec.epochs)


def personal_rows(sessions: Sequence[np.ndarray], *extra: np.ndarray) -> np.ndarray:
    """Sorted item ids a device holds its own rows of: its clicked items and ``extra``."""
    return np.unique(np.concatenate([*sessions, *extra, np.zeros(0, np.int64)]).astype(np.int64))


def padded_rows(rows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-device row ids -> int64 [D, R] (0 where padded) and bool [D, R] (a real row)."""
    width = max((len(r) for r in rows), default=0)
    ids = np.zeros((len(rows), max(width, 1)), np.int64)
    ok = np.zeros(ids.shape, bool)
    for i, r in enumerate(rows):
        ids[i, :len(r)], ok[i, :len(r)] = r, True
    return ids, ok


def local_ids(items: np.ndarray, owner: np.ndarray, rows: Sequence[np.ndarray],
              n_items: int) -> np.ndarray:
    """Position of ``items[j]`` among ``rows[owner[j]]`` (sorted), -1 if it is not there."""
    offsets = np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int64)
    keys = np.concatenate([i * n_items + r for i, r in enumerate(rows)] + [np.full(1, -1)])
    want = owner.astype(np.int64) * n_items + items             # keys[-1] = -1: never found
    at = np.minimum(np.searchsorted(keys[:-1], want), len(keys) - 1)
    return np.where(keys[at] == want, at - offsets[owner], -1)


@dataclass(frozen=True)
class Step:
    """One batched step over the active devices [0, A).

    inp int64 [A, B, T]: input positions among the device's personal rows (0 at pads);
    valid bool [A, B, T]: a target follows there; target int64 [M]: its item id, in the
    loop's order (device, piece, position); device int64 [M]; slot int64 [M]: its index
    among the device's targets; count int64 [A]: targets per device.
    """

    inp: np.ndarray
    valid: np.ndarray
    target: np.ndarray
    device: np.ndarray
    slot: np.ndarray
    count: np.ndarray


class Schedule:
    """Every step of a cohort's plans (devices sorted by steps, most first) as ``Step``s."""

    def __init__(self, plans: Sequence[DevicePlan], rows: Sequence[np.ndarray],
                 n_items: int) -> None:
        n_steps = [len(p.steps) for p in plans]
        if any(a < b for a, b in itertools.pairwise(n_steps)):
            raise ValueError("plans must be sorted by their number of steps, most first")
        self.n_steps = n_steps[0] if n_steps else 0
        lens = [np.array([len(x) for x in p.pieces], np.int64) for p in plans]
        owner = np.repeat(np.arange(len(plans)), [len(x) for x in lens])
        self.length = np.concatenate([*lens, np.zeros(0, np.int64)])              # [P]
        self.start = np.r_[0, np.cumsum(self.length)[:-1]].astype(np.int64)       # [P]
        self.items = np.concatenate([x for p in plans for x in p.pieces] + [np.zeros(0, np.int64)])
        item_owner = np.repeat(owner, self.length)
        self.local = local_ids(self.items, item_owner, rows, n_items)
        first = np.r_[0, np.cumsum([len(x) for x in lens])].astype(np.int64)     # piece offsets
        dev, step, slot, piece = [], [], [], []
        for i, p in enumerate(plans):
            if not p.steps:
                continue
            sizes = [len(b) for b in p.steps]
            dev.append(np.full(sum(sizes), i))
            step.append(np.repeat(np.arange(len(sizes)), sizes))
            slot.append(np.concatenate([np.arange(n) for n in sizes]))
            piece.append(first[i] + np.concatenate(p.steps))
        cat = [np.concatenate([*x, np.zeros(0, np.int64)]).astype(np.int64)
               for x in (dev, step, slot, piece)]
        order = np.lexsort((cat[2], cat[0], cat[1]))                  # by step, device, slot
        self.dev, self.step_of, self.slot, self.piece = (x[order] for x in cat)
        self.bounds = np.searchsorted(self.step_of, np.arange(self.n_steps + 1))

    def __getitem__(self, s: int) -> Step:
        lo, hi = self.bounds[s], self.bounds[s + 1]
        dev, slot, piece = self.dev[lo:hi], self.slot[lo:hi], self.piece[lo:hi]
        n_a, n_b = int(dev.max()) + 1, int(slot.max()) + 1
        trans = self.length[piece] - 1                                        # [n]
        n_t = int(trans.max())
        t = np.arange(n_t)
        ok = t[None, :] < trans[:, None]                                      # [n, T]
        at = np.minimum(self.start[piece][:, None] + t[None, :], len(self.items) - 2)
        inp = np.zeros((n_a, n_b, n_t), np.int64)
        valid = np.zeros((n_a, n_b, n_t), bool)
        tgt = np.zeros((n_a, n_b, n_t), np.int64)
        inp[dev, slot] = np.where(ok, self.local[at], 0)
        valid[dev, slot] = ok
        tgt[dev, slot] = self.items[at + 1]
        flat = np.flatnonzero(valid)
        device = flat // (n_b * n_t)
        count = np.bincount(device, minlength=n_a)
        slot_of = np.arange(len(flat)) - np.r_[0, np.cumsum(count)[:-1]][device]
        return Step(inp, valid, tgt.ravel()[flat], device, slot_of, count)


@dataclass(frozen=True)
class Histories:
    """Test events of a cohort: right-padded histories as positions among the device's
    personal rows where it has one (``local`` int64 [D, E, L], -1 elsewhere) and item ids
    (``items``, 0 at pads), history lengths int64 [D, E] (0 = no event)."""

    local: np.ndarray
    items: np.ndarray
    length: np.ndarray


def histories(events: Sequence[np.ndarray], rows: Sequence[np.ndarray],
              n_items: int) -> Histories:
    """``events[i]``: device i's left-padded histories int64 [E_i, L] (``next_click_events``)."""
    n_e = max(max((len(h) for h in events), default=0), 1)
    n_l = max((h.shape[1] for h in events), default=1)
    items = np.zeros((len(events), n_e, n_l), np.int64)
    length = np.zeros((len(events), n_e), np.int64)
    for i, h in enumerate(events):
        n = (h >= 0).sum(axis=1)                                      # PAD = -1 on the left
        length[i, :len(h)] = n
        width = h.shape[1]                                            # right-align each row
        shift = (np.arange(width)[None, :] + (width - n)[:, None]) % width
        items[i, :len(h), :width] = np.take_along_axis(h, shift, axis=1)
    real = np.arange(n_l)[None, None, :] < length[:, :, None]
    owner = np.broadcast_to(np.arange(len(events))[:, None, None], items.shape)
    local = local_ids(items.ravel(), owner.ravel(), rows, n_items).reshape(items.shape)
    return Histories(np.where(real, local, -1), np.where(real, items, 0), length)
