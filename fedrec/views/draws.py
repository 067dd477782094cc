"""Counter-based random draws: every draw is a pure function of (seed, stream, device, event).

A device's training negatives, simulated exposures and evaluation candidates must not depend
on which other devices are built with it (a cohort, a subset, a lazy per-device build), so
they cannot come from one generator shared by all devices. Here each draw is a hash:

    key(seed, stream, owner, event) -> SplitMix64 stream -> item

where SplitMix64 (Steele, Lea & Flood, OOPSLA 2014) is the generator with state
``key + c * golden`` at counter ``c``. Rows are independent, so the work is vectorised over
any set of (owner, event) rows and chunked to bound memory.

``draw_excluding`` takes ``count`` distinct items per row that the row's owner never
touched, uniformly or proportionally to item weights (successive sampling without
replacement), by rejection on widening draws; rows still short after ``ROUNDS`` rounds take
an exact fallback (random keys over every allowed item; Efraimidis & Spirakis 2006 for
weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrec.errors import ConfigError
from fedrec.metrics import first_occurrence

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
#: draw streams: independent hashes for each use of randomness
NEGATIVE_STREAM, EXPOSURE_STREAM, VALID_STREAM, TEST_STREAM = 1, 2, 3, 4
ROUNDS = 6
_CHUNK = 1 << 22        # draws per chunk: four int64 temporaries of 32 MB at most
_INV53 = 1.0 / (1 << 53)
BITMAP_MAX_BITS = 1 << 30     # 128 MB: a touched-set bitmap above this uses binary search


def mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (a bijection of uint64). uint64 [...] -> uint64 [...]."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def row_keys(seed: int, stream: int, owner: np.ndarray, event: np.ndarray) -> np.ndarray:
    """One 64-bit key per row from (seed, stream, owner, event). int [M] x2 -> uint64 [M]."""
    with np.errstate(over="ignore"):
        head = mix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], np.uint64) + GOLDEN)
        head = mix64(head ^ np.uint64(stream))
        k = mix64(head ^ np.asarray(owner).astype(np.uint64))
        return mix64(k ^ (np.asarray(event).astype(np.uint64) * GOLDEN))


def random_bits(keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """SplitMix64 output ``counters`` of each row's stream. uint64 [M], int [W] -> uint64 [M, W]."""
    with np.errstate(over="ignore"):
        c = (np.asarray(counters).astype(np.uint64) + np.uint64(1)) * GOLDEN
        return mix64(keys[:, None] + c[None, :])


def unit_floats(bits: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) from the top 53 bits. uint64 [...] -> float64 [...]."""
    return (bits >> np.uint64(11)).astype(np.float64) * _INV53


@dataclass(frozen=True, eq=False)
class Touched:
    """The (owner, item) pairs that exist: sorted unique int64 keys ``owner * n_items + item``,
    plus the same set as a packed bitmap (uint8 [ceil(U * I / 8)]) when it is small enough
    (ML-1M: 2.8 MB), which answers ``contains`` several times faster than a binary search."""

    keys: np.ndarray
    n_items: int
    bits: np.ndarray | None = None

    @classmethod
    def of(cls, owner: np.ndarray, item: np.ndarray, n_items: int) -> Touched:
        keys = np.sort(np.asarray(owner, np.int64) * n_items + item)        # owner-major: quick
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
        n_bits = (int(keys[-1]) + 1) if len(keys) else 0
        bits = None
        if n_bits <= BITMAP_MAX_BITS:
            bits = np.zeros((n_bits + 7) // 8, np.uint8)
            np.bitwise_or.at(bits, keys >> 3, (128 >> (keys & 7)).astype(np.uint8))
        return cls(keys, n_items, bits)

    def contains(self, owner: int | np.ndarray, item: np.ndarray) -> np.ndarray:
        """Bool, broadcast over ``owner`` and ``item``: did ``owner`` touch ``item``?"""
        q = np.asarray(owner, np.int64) * self.n_items + item
        if len(self.keys) == 0:
            return np.zeros(q.shape, bool)
        if self.bits is not None:
            inside = q < 8 * len(self.bits)
            byte = self.bits[np.where(inside, q, 0) >> 3]
            return inside & ((byte << (q & 7).astype(np.uint8)) & 128 > 0)
        pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        return self.keys[pos] == q

    def counts(self, n_owners: int, weights: np.ndarray | None = None) -> np.ndarray:
        """Touched items per owner (only items of positive weight when given). -> int64 [U]"""
        owner, item = np.divmod(self.keys, self.n_items)
        keep = np.ones(len(item), bool) if weights is None else weights[item] > 0
        return np.bincount(owner[keep], minlength=n_owners)


def check_free(touched: Touched, owners: np.ndarray, n_owners: int, count: int,
               weights: np.ndarray | None, what: str, key: str) -> None:
    """ConfigError when one of ``owners`` has fewer than ``count`` items it may be given."""
    if count <= 0 or len(owners) == 0:
        return
    pool = touched.n_items if weights is None else int((weights > 0).sum())
    free = pool - touched.counts(n_owners, weights)[owners]                   # [K]
    if free.min() < count:
        worst = int(np.argmin(free))
        d = int(owners[worst])
        raise ConfigError(f"{key} = {count} but device {d} has only {free[worst]} items it never "
                          f"touched to draw {what} from ({pool} items); lower {key}")


def _items_of(bits: np.ndarray, n_items: int, cdf: np.ndarray | None) -> np.ndarray:
    """Item ids from random bits: uniform, or inverse CDF of the weights. uint64 [R, W] -> [R, W]"""
    if cdf is None:
        return (bits % np.uint64(n_items)).astype(np.int64)
    x = np.minimum(unit_floats(bits) * cdf[-1], np.nextafter(cdf[-1], 0.0))  # < total: no overrun
    return np.searchsorted(cdf, x, side="right").astype(np.int64)


def draw_excluding(keys: np.ndarray, owner: np.ndarray, count: int, touched: Touched,
                   weights: np.ndarray | None = None) -> np.ndarray:
    """``count`` distinct untouched items per row, a function of the row's key alone.

    Parameters
    ----------
    keys : uint64 [M]   one key per row (``row_keys``).
    owner : int64 [M]   the device whose touched items the row must avoid.
    count : int
    touched : Touched
    weights : float64 [n_items] or None   sampling weights (None: uniform); zero-weight
        items are never drawn.

    Returns
    -------
    int64 [M, count]; call ``check_free`` first (rows without enough allowed items fail).
    """
    out = np.empty((len(keys), count), np.int64)
    if count == 0 or len(keys) == 0:
        return out
    cdf = None if weights is None else np.cumsum(np.asarray(weights, np.float64))
    width = count + count // 2 + 2
    rows = max(1, _CHUNK // (width << (ROUNDS - 1)))
    for lo in range(0, len(keys), rows):
        sl = slice(lo, lo + rows)
        out[sl] = _draw_chunk(keys[sl], owner[sl], count, touched, cdf, width)
    return out


def _draw_chunk(keys: np.ndarray, owner: np.ndarray, count: int, touched: Touched,
                cdf: np.ndarray | None, width: int) -> np.ndarray:
    out = np.empty((len(keys), count), np.int64)
    todo, start = np.arange(len(keys)), 0
    for _ in range(ROUNDS):
        if todo.size == 0:
            return out
        cand = _items_of(random_bits(keys[todo], np.arange(start, start + width)),
                         touched.n_items, cdf)                                     # [R, W]
        ok = ~touched.contains(owner[todo, None], cand)
        if count > 1:                   # one item per row needs no distinctness check
            ok &= first_occurrence(cand)
        keep = ok & (np.cumsum(ok, axis=1) <= count)
        done = keep.sum(axis=1) == count
        out[todo[done]] = cand[done][keep[done]].reshape(-1, count)
        todo, start, width = todo[~done], start + width, width * 2
    for r in todo:                      # rare: owners that touched most of the catalogue
        out[r] = _exact(keys[r], int(owner[r]), count, touched, cdf)
    return out


def _exact(key: np.uint64, owner: int, count: int, touched: Touched,
           cdf: np.ndarray | None) -> np.ndarray:
    """The ``count`` allowed items with the smallest random keys (weighted: -log(u) / w)."""
    n = touched.n_items
    u = unit_floats(random_bits(np.array([key]), np.arange(n) + (1 << 40))[0])    # [I]
    score = u if cdf is None else -np.log1p(-u) / np.maximum(np.diff(cdf, prepend=0.0), 1e-300)
    allowed = ~touched.contains(owner, np.arange(n))
    if cdf is not None:
        allowed &= np.diff(cdf, prepend=0.0) > 0
    score = np.where(allowed, score, np.inf)
    return np.argsort(score, kind="stable")[:count]
