"""Preprocessing and splits: pure, vectorised functions on the canonical interaction table.

Input everywhere is a DataFrame with ``fedrec.data.schema.COLUMNS`` whose rows are sorted by
(user, ts) with ties in file order, as ``make_interactions`` builds it; functions that depend
on the order check it and raise ``DataError`` otherwise. No function modifies its input.

Id spaces: ``reindex`` maps raw ids to contiguous ``0..n-1`` in sorted raw-id order, so the
ids depend only on the *set* of raw ids (not on row order or on which file was read first).
``leave_one_out`` reindexes for you; the time splits keep the ids they are given, so call
``reindex`` first when the parts must share one contiguous id space.

Simulated devices: one device per user, and the device id *is* the contiguous user id
(``device_ids``). It is stable across runs for the same set of raw user ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from fedrec.errors import ConfigError, DataError

#: C3DRec's idle gap (seconds) that ends a session.
SESSION_GAP_SECONDS: int = 706


@dataclass(frozen=True, eq=False)
class IdMap:
    """Reversible map between raw ids and contiguous ids: ``labels[j]`` is the raw id of j.

    ``labels`` must be strictly increasing (``IdMap.from_values`` sorts and deduplicates);
    it is stored as a read-only copy. ``name`` ("user" / "item") only labels error messages.
    """

    labels: np.ndarray
    name: str = "id"

    def __post_init__(self) -> None:
        labels = np.array(self.labels)  # copy: the caller's array stays theirs
        if labels.ndim != 1 or (len(labels) > 1 and not np.all(labels[1:] > labels[:-1])):
            raise DataError(f"IdMap({self.name}) labels must be a strictly increasing 1-d "
                            "array; build the map with IdMap.from_values")
        labels.setflags(write=False)
        object.__setattr__(self, "labels", labels)

    @classmethod
    def from_values(cls, values: np.ndarray | pd.Series, name: str = "id") -> IdMap:
        """Map of the distinct raw ids in ``values`` (sorted)."""
        return cls(np.unique(np.asarray(values)), name)

    def __len__(self) -> int:
        return len(self.labels)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, IdMap) and self.name == other.name
                and np.array_equal(self.labels, other.labels))

    __hash__ = None  # type: ignore[assignment]  # equal maps need not hash alike

    def contains(self, raw: np.ndarray | pd.Series) -> np.ndarray:
        """Bool per raw id: is it in the map?"""
        raw = np.asarray(raw)
        pos = np.clip(np.searchsorted(self.labels, raw), 0, max(len(self.labels) - 1, 0))
        return (self.labels[pos] == raw) if len(self.labels) else np.zeros(raw.shape, bool)

    def encode(self, raw: np.ndarray | pd.Series) -> np.ndarray:
        """Contiguous int64 ids of ``raw``; DataError naming the unknown ids if any."""
        raw = np.asarray(raw)
        known = self.contains(raw)
        if not known.all():
            unknown = np.unique(raw[~known])
            raise DataError(f"{len(unknown)} unknown {self.name} ids (e.g. "
                            f"{unknown[:5].tolist()}) are not in the {self.name} map of "
                            f"{len(self)} ids; drop them first (keep rows where "
                            f"{self.name}_map.contains(...) is True)")
        return np.searchsorted(self.labels, raw).astype(np.int64)

    def decode(self, ids: np.ndarray | pd.Series) -> np.ndarray:
        """Raw ids of contiguous ``ids``; DataError when an id is outside ``0..len-1``."""
        ids = np.asarray(ids, dtype=np.int64)
        bad = (ids < 0) | (ids >= len(self))
        if bad.any():
            raise DataError(f"{self.name} ids {np.unique(ids[bad])[:5].tolist()} are outside "
                            f"0..{len(self) - 1}; decode only ids produced by this map")
        return self.labels[ids]


@dataclass(frozen=True, eq=False)
class Split:
    """Train / validation / test rows with contiguous ids and the maps back to raw ids."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    n_users: int
    n_items: int
    user_map: IdMap
    item_map: IdMap


@dataclass(frozen=True, eq=False)
class TimeSplit:
    """C3DRec's three stages: global training (pre), on-device training (device), test."""

    pre: pd.DataFrame
    device: pd.DataFrame
    test: pd.DataFrame


def kcore(df: pd.DataFrame, min_user: int = 5, min_item: int = 5) -> pd.DataFrame:
    """Keep the largest subset where every user has >= min_user and every item >= min_item rows.

    Alternately drops users then items below their threshold until a full round drops
    nothing (a fixed point; the result does not depend on the order). Rows are counted
    as they are, duplicates included. Row order is kept, the index is reset.

    Raises
    ------
    DataError: nothing is left; the message gives rows/users/items after each step.
    """
    if min(min_user, min_item) < 0:
        raise ConfigError(f"kcore thresholds must be >= 0, got min_user={min_user}, "
                          f"min_item={min_item}; use 0 to skip a side")
    codes = {c: pd.factorize(df[c])[0] for c in ("user", "item")}   # (N,) each
    keep = np.ones(len(df), dtype=bool)
    steps = [_step_counts("input", codes, keep)]
    changed, rnd = True, 0
    while changed and keep.any():
        changed, rnd = False, rnd + 1
        for col, k in (("user", min_user), ("item", min_item)):
            count = np.bincount(codes[col][keep], minlength=codes[col].max(initial=-1) + 1)
            drop = keep & (count[codes[col]] < k)
            if drop.any():
                keep &= ~drop
                changed = True
                steps.append(_step_counts(f"{col}s>={k} (round {rnd})", codes, keep))
    if not keep.any():
        raise DataError(f"k-core (min_user={min_user}, min_item={min_item}) left no "
                        f"interactions; rows/users/items after each step: {'; '.join(steps)}; "
                        "lower min_user/min_item or use more data")
    return df.loc[keep].reset_index(drop=True)


def _step_counts(label: str, codes: dict[str, np.ndarray], keep: np.ndarray) -> str:
    """'label rows/users/items' for the rows still kept."""
    users = np.unique(codes["user"][keep]).size
    items = np.unique(codes["item"][keep]).size
    return f"{label} {int(keep.sum())}/{users}/{items}"


def reindex(df: pd.DataFrame) -> tuple[pd.DataFrame, IdMap, IdMap]:
    """Replace raw user/item ids by contiguous ids assigned in sorted raw-id order.

    Returns the new frame (same rows, same order, index reset) and the user and item maps.
    Sorted order keeps a user-sorted table user-sorted.
    """
    out = df.reset_index(drop=True)
    maps = []
    for col in ("user", "item"):
        labels, inverse = np.unique(out[col].to_numpy(), return_inverse=True)
        out[col] = inverse.astype(np.int64).reshape(-1)
        maps.append(IdMap(labels, col))
    return out, maps[0], maps[1]


def _require_sorted(df: pd.DataFrame, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (user, ts) arrays after checking rows are sorted by (user, ts)."""
    user = df["user"].to_numpy()
    ts = df["ts"].to_numpy()
    bad = (user[1:] < user[:-1]) | ((user[1:] == user[:-1]) & (ts[1:] < ts[:-1]))
    if bad.any():
        row = int(np.argmax(bad)) + 1
        raise DataError(f"{caller} needs rows sorted by (user, ts) but row {row} is out of "
                        "order; build the table with fedrec.data.schema.make_interactions")
    return user, ts


def _positions(user: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For user-sorted rows: 0-based position of each row in its user's run, and run size."""
    n = len(user)
    first = np.r_[True, user[1:] != user[:-1]] if n else np.zeros(0, bool)   # (N,)
    starts = np.flatnonzero(first)                                           # (U,)
    run = np.cumsum(first) - 1                                               # (N,)
    size = np.diff(np.r_[starts, n])                                         # (U,)
    return np.arange(n) - starts[run], size[run]


def sessionize(df: pd.DataFrame, gap_seconds: float = SESSION_GAP_SECONDS) -> np.ndarray:
    """Session id per row (int64, 0..S-1 in row order).

    A new session starts at a user's first row and whenever the idle time since the
    previous row of the same user is strictly greater than ``gap_seconds`` (C3DRec: 706 s).
    """
    user, ts = _require_sorted(df, "sessionize")
    if len(user) == 0:
        return np.zeros(0, np.int64)
    new = np.r_[True, (user[1:] != user[:-1]) | (np.diff(ts) > gap_seconds)]  # (N,)
    return (np.cumsum(new) - 1).astype(np.int64)


def leave_one_out(df: pd.DataFrame) -> Split:
    """Per user: last row -> test, second-last -> valid, the rest -> train.

    Users with fewer than 3 rows keep all their rows in train (no valid/test row), so
    they still contribute to training but are not evaluated. "Last" follows the row
    order, so among equal timestamps the later row in the file is the later event.
    Ids are made contiguous with ``reindex`` over the whole table.
    """
    data, user_map, item_map = reindex(df)
    user, _ = _require_sorted(data, "leave_one_out")
    pos, size = _positions(user)
    from_end = size - 1 - pos                                   # 0 = last row of the user
    evaluated = size >= 3
    test = evaluated & (from_end == 0)
    valid = evaluated & (from_end == 1)
    train = ~(test | valid)
    tr, va, te = (data.loc[m].reset_index(drop=True) for m in (train, valid, test))
    return Split(tr, va, te, n_users=len(user_map), n_items=len(item_map),
                 user_map=user_map, item_map=item_map)


def time_cutoff_split(df: pd.DataFrame, t_device: int, t_test: int) -> TimeSplit:
    """Global cutoffs: pre ``ts < t_device``, device ``t_device <= ts < t_test``, test after."""
    if t_device > t_test:
        raise ConfigError(f"t_device={t_device} is after t_test={t_test}; "
                          "need t_device <= t_test")
    ts = df["ts"].to_numpy()
    return _three_way(df, ts < t_device, ts < t_test)


def positional_cutoff_split(df: pd.DataFrame, device_frac: float, test_frac: float) -> TimeSplit:
    """Per-user cutoffs by position, for tables without timestamps.

    For a user with n rows the last ``floor(n * test_frac)`` rows are test, the
    ``floor(n * (device_frac + test_frac)) - floor(n * test_frac)`` rows before them are
    device, the rest pre. Floors mean short histories stay in pre.
    """
    if min(device_frac, test_frac) < 0 or device_frac + test_frac > 1:
        raise ConfigError(f"need device_frac, test_frac >= 0 with sum <= 1, got "
                          f"{device_frac}, {test_frac}; adjust the fractions")
    user, _ = _require_sorted(df, "positional_cutoff_split")
    pos, size = _positions(user)
    eps = 1e-9                        # so that e.g. 10 * 0.3 = 2.9999999999999996 floors to 3
    n_test = np.floor(size * test_frac + eps).astype(np.int64)
    n_tail = np.floor(size * (device_frac + test_frac) + eps).astype(np.int64)
    return _three_way(df, pos < size - n_tail, pos < size - n_test)


def _three_way(df: pd.DataFrame, in_pre: np.ndarray, before_test: np.ndarray) -> TimeSplit:
    parts = [in_pre, before_test & ~in_pre, ~before_test]
    return TimeSplit(*(df.loc[m].reset_index(drop=True) for m in parts))


def old_new_users(df: pd.DataFrame, quantile: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Split users by the mean timestamp of their rows (C3DRec).

    With q = ``np.quantile(means, quantile)`` (linear interpolation), users whose mean
    ``ts`` is <= q are old, the others new. Returns (old, new) sorted user-id arrays.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ConfigError(f"quantile must be in [0, 1], got {quantile}")
    if len(df) == 0:
        raise DataError("old_new_users got an empty table; filter less")
    means = df.groupby("user", sort=True)["ts"].mean()
    old = means.to_numpy() <= np.quantile(means.to_numpy(), quantile)
    return means.index.to_numpy()[old], means.index.to_numpy()[~old]


def device_ids(user_map: IdMap) -> np.ndarray:
    """One simulated device per user: device id == contiguous user id (0..n_users-1)."""
    return np.arange(len(user_map), dtype=np.int64)


def train_matrix(split: Split) -> sparse.csr_matrix:
    """Binary users x items CSR of training interactions (duplicates count once)."""
    train = split.train
    ones = np.ones(len(train), np.float32)
    m = sparse.csr_matrix((ones, (train["user"].to_numpy(), train["item"].to_numpy())),
                          shape=(split.n_users, split.n_items))
    m.sum_duplicates()
    m.sort_indices()
    m.data[:] = 1.0
    return m


def train_items_by_user(split: Split) -> list[np.ndarray]:
    """Sorted distinct training item ids per contiguous user id (to exclude in ranking)."""
    m = train_matrix(split)
    return np.split(m.indices.astype(np.int64), m.indptr[1:-1])
