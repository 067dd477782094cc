"""MC-SF's events: per target event the cloud's delayed click sequence, the device's real-time
click and exposure windows, the negative-memory point it may use, and its candidates.

A device's sequence ``items[0..n-1]`` is cut by the sample view into the slow phase (part
pre, ``0..s_f-1``), the fast phase (``s_f..s_t-1``) and the test (``s_t..n-1``). For a
target event t:

* ``slow``: the cloud's sequence, the last ``slow_len`` clicks before ``min(t, s_f)`` (the
  cloud holds the slow phase only: delayed);
* ``clicks``: the last ``fast_len`` clicks before t (the device sees everything);
* ``expo``: the last ``fast_len`` exposures (shown, not clicked) of the events before t, in
  time order (an event's own exposures are not in its window);
* ``mem``: the negative-memory upload the cloud may pair with t: the latest upload point
  p <= t; points are ``s_t, s_t - k, s_t - 2k, ... >= 1`` (k = ``upload_every``), and the
  memory at p is GRU_n over p's exposure window (the exposures of events before p);
* ``cand``/``label``: training: the click (1), its ``negatives`` sampled items and its first
  ``exposure_negatives`` exposures (0); test: the view's 1 + N evaluation candidates (the
  target first).

Windows are right-aligned and left-padded with ``PAD = -1`` (the models' convention).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from fedrec.models.base import PAD
from fedrec.views.config import DEVICE, TEST
from fedrec.views.samples import EXPOSURE, NEGATIVE, DeviceSamples


@dataclass(frozen=True, eq=False)
class Events:
    """Target events of one or many devices (E rows, C candidates each).

    owner, event int64 [E] (device id, index in its sequence); slow int64 [E, Lc]; clicks,
    expo int64 [E, Lm]; mem int64 [E] (row of the memory table, -1: none); cand int64 [E, C];
    label float32 [E, C].
    """

    owner: np.ndarray
    event: np.ndarray
    slow: np.ndarray
    clicks: np.ndarray
    expo: np.ndarray
    mem: np.ndarray
    cand: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.owner)

    def take(self, idx: np.ndarray) -> Events:
        return Events(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def concat(parts: list[Events]) -> Events:
        return Events(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                         for f in fields(Events)})


@dataclass(frozen=True, eq=False)
class Memory:
    """A device's negative-memory upload points: point int64 [P] (event positions, ascending)
    and window int64 [P, Lm] (the exposure window GRU_n reads at each point)."""

    point: np.ndarray
    window: np.ndarray


def windows(seq: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """For each end e, ``seq[max(0, e - length):e]`` right-aligned, PAD-left. -> int64 [len(ends), length]"""
    ends = np.asarray(ends, np.int64)
    idx = ends[:, None] - length + np.arange(length)[None, :]               # [E, length]
    ok = idx >= 0
    out = np.full(idx.shape, PAD, np.int64)
    if len(seq):
        out[ok] = seq[idx[ok]]
    return out


def phase_bounds(dev: DeviceSamples) -> tuple[int, int]:
    """(s_f, s_t): first fast-phase event, first test event of the device."""
    return int((dev.part < DEVICE).sum()), int((dev.part < TEST).sum())


def event_exposures(dev: DeviceSamples) -> np.ndarray:
    """Every event's simulated exposures in draw order. -> int64 [n, e]"""
    s = dev.samples
    return s.item[s.kind == EXPOSURE].reshape(len(dev.items), -1).astype(np.int64)


def event_negatives(dev: DeviceSamples) -> np.ndarray:
    """Every event's sampled training negatives. -> int64 [n, k]"""
    s = dev.samples
    return s.item[s.kind == NEGATIVE].reshape(len(dev.items), -1).astype(np.int64)


def memory_points(dev: DeviceSamples, every: int, fast_len: int) -> Memory:
    """The device's upload points and the exposure windows GRU_n reads there."""
    _, s_t = phase_bounds(dev)
    point = np.arange(s_t, 0, -every)[::-1].astype(np.int64)                  # [P] ascending
    expo = event_exposures(dev)
    per = expo.shape[1]
    return Memory(point, windows(expo.ravel(), point * per, fast_len))


def device_events(dev: DeviceSamples, targets: np.ndarray, *, slow_len: int, fast_len: int,
                  every: int, cand: np.ndarray, label: np.ndarray) -> Events:
    """The events ``targets`` (int [E], indices into the device's sequence) with their
    candidates ``cand`` [E, C] and labels ``label`` [E, C] (module docstring)."""
    targets = np.asarray(targets, np.int64)
    s_f, _ = phase_bounds(dev)
    expo = event_exposures(dev)
    per = expo.shape[1]
    point = memory_points(dev, every, fast_len).point
    mem = np.searchsorted(point, targets, side="right") - 1                  # -1: none yet
    return Events(
        owner=np.full(len(targets), dev.device_id, np.int64), event=targets,
        slow=windows(dev.items.astype(np.int64), np.minimum(targets, s_f), slow_len),
        clicks=windows(dev.items.astype(np.int64), targets, fast_len),
        expo=windows(expo.ravel(), targets * per, fast_len),
        mem=mem.astype(np.int64), cand=np.asarray(cand, np.int64),
        label=np.asarray(label, np.float32))


def training_events(dev: DeviceSamples, part: int, *, slow_len: int, fast_len: int, every: int,
                    exposure_negatives: int, last: int = 0) -> Events:
    """The device's training targets in ``part`` (PRE: the slow phase, DEVICE: the fast
    phase), the last ``last`` of them (0: all), with the click, its negatives and its first
    ``exposure_negatives`` exposures as candidates."""
    targets = np.flatnonzero(dev.part == part)
    if last:
        targets = targets[-last:]
    cand = np.column_stack([dev.items[targets].astype(np.int64), event_negatives(dev)[targets],
                            event_exposures(dev)[targets, :exposure_negatives]])
    label = np.zeros(cand.shape, np.float32)
    label[:, 0] = 1.0
    return device_events(dev, targets, slow_len=slow_len, fast_len=fast_len, every=every,
                         cand=cand, label=label)


def held_out_events(dev: DeviceSamples, *, slow_len: int, fast_len: int, every: int) -> Events:
    """The device's test events with the view's evaluation candidates (target first)."""
    t = dev.test
    cand = t.candidates
    label = np.zeros(cand.shape, np.float32)
    label[:, 0] = 1.0
    return device_events(dev, t.event, slow_len=slow_len, fast_len=fast_len, every=every,
                         cand=cand, label=label)


def seen_items(dev: DeviceSamples) -> np.ndarray:
    """Sorted unique items of the device's slow and fast phases: what a full ranking of its
    test events excludes (the target never is). -> int64 [k]"""
    return np.unique(dev.items[dev.part < TEST].astype(np.int64))


def items_read(events: Events, memory: Memory | None = None) -> np.ndarray:
    """Sorted unique item ids a set of events (and memory windows) reads: the rows of the
    item table a device needs."""
    arrays = [events.clicks.ravel(), events.expo.ravel(), events.cand.ravel()]
    if memory is not None:
        arrays.append(memory.window.ravel())
    ids = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    return np.unique(ids[ids >= 0])
