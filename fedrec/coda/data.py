"""CoDA's samples: what a device logs, what the cloud's pool holds, what travels.

A sample is one candidate of one event: the clicked item (label 1) or one of its simulated
exposures (label 0, ``fedrec.views.samples``), with the user's last ``L`` items before the
event. Devices read theirs from the sample view; the cloud rebuilds the same samples from the
logs it has been sent (every event up to the day before the current one): same exposure
draws (same keys, same exclusions, same popularity weights), same histories
(tests/coda/test_data.py).

Matched samples travel as the paper encodes them: each sample's non-zero feature ids (a
sparse binary vector: label, item, history length, history items) as int32, zlib, BASE64.
No user id is in a sample.
"""

from __future__ import annotations

import base64
import itertools
import zlib
from dataclasses import dataclass, fields

import numpy as np

from fedrec.dccl.data import log_histories, log_positions
from fedrec.views.draws import EXPOSURE_STREAM, Touched, draw_excluding, row_keys
from fedrec.views.features import ItemSide
from fedrec.views.samples import POSITIVE, CloudLogs, DeviceSamples

UNKNOWN_BUCKETS = 64      # category stand-in for data with neither categories nor genres


def item_categories(side: ItemSide) -> np.ndarray:
    """One category code per item [I] in 0..C-1: the item's category, else its first genre,
    else ``item % 64``; unknown ones share the last code."""
    n = len(side.category)
    if (side.category >= 0).any():
        base = side.category
    elif side.genres.shape[1]:
        base = side.genres[:, 0].astype(np.int64)
    else:
        base = np.arange(n, dtype=np.int64) % UNKNOWN_BUCKETS
    top = int(base.max()) + 1 if len(base) else 0
    return np.where(base >= 0, base, top).astype(np.int64)


def periods(ts: np.ndarray, origin: int, period_s: int) -> np.ndarray:
    """Day (period) index of unix times. int [N] -> int64 [N]"""
    return np.floor_divide(np.asarray(ts, np.int64) - origin, period_s)


def data_origin(first_ts: int, origin: int) -> int:
    """``origin``, or UTC midnight of the first event when it is -1."""
    return origin if origin >= 0 else int(first_ts) // 86_400 * 86_400


@dataclass(frozen=True, eq=False)
class Block:
    """Samples: item int64 [n], label int8 [n], hist int32 [n, L] (-1 padded at the end)."""

    item: np.ndarray
    label: np.ndarray
    hist: np.ndarray

    def __len__(self) -> int:
        return len(self.item)

    def take(self, idx: np.ndarray) -> Block:
        return Block(*(getattr(self, f.name)[idx] for f in fields(self)))

    @staticmethod
    def concat(parts: list[Block], length: int) -> Block:
        if not parts:
            return empty_block(length)
        return Block(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Block)))


def empty_block(length: int) -> Block:
    return Block(np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros((0, length), np.int32))


@dataclass(frozen=True, eq=False)
class DeviceLog:
    """A device's own samples with the day each was logged: block [S], day int64 [S]."""

    block: Block
    day: np.ndarray


def device_log(dev: DeviceSamples, origin: int, period_s: int) -> DeviceLog:
    s = dev.samples
    label = (s.kind == POSITIVE).astype(np.int8)
    day = periods(dev.ts[s.event], origin, period_s)
    return DeviceLog(Block(s.item.astype(np.int64), label, s.history.astype(np.int32)), day)


@dataclass(frozen=True, eq=False)
class Pool:
    """The cloud's sample pool: every logged event's samples. block [P]; owner, day int64 [P]."""

    block: Block
    owner: np.ndarray
    day: np.ndarray


def build_pool(logs: CloudLogs, n_items: int, exposures: int, history_len: int, seed: int,
               origin: int, period_s: int) -> Pool:
    """The samples of every event in ``logs`` (every part: the cloud was sent them all; the
    strategy reads only days before the current one), grouped by event as on the devices."""
    pos = log_positions(logs.owner)
    rows = np.arange(len(logs.owner))
    hist = log_histories(logs.owner, logs.item, history_len, rows).astype(np.int32)   # [M, L]
    touched = Touched.of(logs.owner, logs.item, n_items)
    weights = np.bincount(logs.item, minlength=n_items)
    keys = row_keys(seed, EXPOSURE_STREAM, logs.owner, pos)
    exp = draw_excluding(keys, logs.owner, exposures, touched, weights)         # [M, e]
    per = 1 + exposures
    item = np.column_stack([logs.item, exp]).ravel()
    label = np.tile(np.r_[1, np.zeros(exposures)], len(rows)).astype(np.int8)
    rep = np.repeat(rows, per)
    day = periods(logs.ts, origin, period_s)
    return Pool(Block(item.astype(np.int64), label, hist[rep]), logs.owner[rep], day[rep])


# ---------------------------------------------------------------------------- the wire format
def encode(block: Block) -> bytes:
    """Sparse binary -> zlib -> BASE64. The int32 stream is the sample count n, then the n
    labels, n items, n history lengths, and the real history items row after row (the
    non-zero feature ids of each sample; no user id)."""
    real = block.hist >= 0
    ints = np.concatenate([[len(block)], block.label, block.item, real.sum(1),
                           block.hist[real]]).astype("<i4")
    return base64.b64encode(zlib.compress(ints.tobytes(), 9))


def decode(data: bytes, length: int) -> Block:
    """``encode``'s inverse (histories padded back to ``length`` with -1)."""
    ints = np.frombuffer(zlib.decompress(base64.b64decode(data)), "<i4").astype(np.int64)
    n = int(ints[0])
    label, item, lens = ints[1:1 + n], ints[1 + n:1 + 2 * n], ints[1 + 2 * n:1 + 3 * n]
    hist = np.full((n, length), -1, np.int32)
    hist[np.arange(length)[None, :] < lens[:, None]] = ints[1 + 3 * n:]
    return Block(item, label.astype(np.int8), hist)


def plain_bytes(block: Block) -> int:
    """The same samples as fixed-width int32 fields (label, item, L history slots): the
    baseline of the size reduction."""
    return 4 * len(block) * (2 + block.hist.shape[1])


def pack_batches(batches: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Encoded batches -> (uint8 [total] concatenated, int64 [n + 1] offsets)."""
    bounds = np.cumsum([0, *(len(b) for b in batches)]).astype(np.int64)
    return np.frombuffer(b"".join(batches), np.uint8).copy(), bounds


def unpack_batches(data: np.ndarray, bounds: np.ndarray) -> list[bytes]:
    raw = np.asarray(data, np.uint8).tobytes()
    return [raw[int(a):int(b)] for a, b in itertools.pairwise(bounds)]
