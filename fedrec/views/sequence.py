"""Every device's time-ordered behaviour sequence as flat arrays, cut into windows.

``event_log(dataset, cfg)`` filters (first N users, k-core), makes ids contiguous (sorted raw
order, ``fedrec.data.splits.reindex``: device id = contiguous user id) and returns one
``EventLog``: rows grouped by device in time order (ties in file order), with ``indptr``
[U+1] so device d's events are rows ``indptr[d]:indptr[d+1]``. All vectorised: no loop over
users or rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrec.data.schema import Dataset
from fedrec.data.splits import IdMap, kcore, reindex
from fedrec.errors import ConfigError, DataError
from fedrec.federated import subset_users
from fedrec.views.config import DAY_SECONDS, DEVICE, PRE, TEST, VALID, SampleViewConfig, Windows
from fedrec.views.features import ItemSide, Profiles, item_side, profiles


@dataclass(frozen=True, eq=False)
class EventLog:
    """All devices' events, grouped by device, in time order.

    owner, item, ts, pos, day: int64 [N] (``pos``: index within the device's sequence;
    ``day``: calendar day, -1 everywhere when the data has no time); behavior, part: int8 [N]
    (``schema.BEHAVIORS`` codes; ``config.PARTS`` codes); indptr: int64 [U+1].
    """

    owner: np.ndarray
    item: np.ndarray
    ts: np.ndarray
    pos: np.ndarray
    day: np.ndarray
    behavior: np.ndarray
    part: np.ndarray
    indptr: np.ndarray
    user_map: IdMap
    item_map: IdMap
    items: ItemSide
    profiles: Profiles | None
    has_time: bool

    @property
    def n_devices(self) -> int:
        return len(self.user_map)

    @property
    def n_items(self) -> int:
        return len(self.item_map)

    def rows_of(self, devices: np.ndarray) -> np.ndarray:
        """Row indices of ``devices`` (int [K]), grouped in that order. -> int64 [sum n_d]"""
        lo, hi = self.indptr[devices], self.indptr[np.asarray(devices) + 1]
        n = hi - lo
        return np.repeat(lo - np.r_[0, np.cumsum(n)[:-1]], n) + np.arange(int(n.sum()))


def event_log(dataset: Dataset, cfg: SampleViewConfig) -> EventLog:
    """Filter, reindex and window ``dataset`` (see the module docstring)."""
    df = subset_users(dataset.interactions, cfg.max_devices)
    if cfg.min_user_interactions > 1 or cfg.min_item_interactions > 1:
        df = kcore(df, cfg.min_user_interactions, cfg.min_item_interactions)
    if len(df) == 0:
        raise DataError(f"{dataset.name}: no interactions left; use more data")
    df, users, items = reindex(df)
    owner, item, ts = (df[c].to_numpy(np.int64) for c in ("user", "item", "ts"))
    _check_order(owner, ts, dataset.name)
    indptr = np.searchsorted(owner, np.arange(len(users) + 1)).astype(np.int64)
    pos = np.arange(len(owner)) - indptr[owner]
    day = _days(ts, cfg.windows, dataset.has_time)
    part = _parts(owner, pos, indptr, day, cfg.windows, dataset.has_time)
    return EventLog(
        owner, item, ts, pos, day, df["behavior"].cat.codes.to_numpy(np.int8), part, indptr,
        users, items, item_side(item, df["category"].to_numpy(np.int64), items,
                                dataset.item_features),
        profiles(users, dataset.user_features), dataset.has_time)


def _check_order(owner: np.ndarray, ts: np.ndarray, name: str) -> None:
    bad = (owner[1:] < owner[:-1]) | ((owner[1:] == owner[:-1]) & (ts[1:] < ts[:-1]))
    if bad.any():
        raise DataError(f"{name}: rows are not sorted by (user, ts) at row "
                        f"{int(np.argmax(bad)) + 1}; build the table with make_interactions")


def _days(ts: np.ndarray, w: Windows, has_time: bool) -> np.ndarray:
    """Calendar day of each event from ``day_origin`` (-1 everywhere without time). [N]"""
    if not has_time:
        return np.full(len(ts), -1, np.int64)
    origin = w.day_origin if w.day_origin >= 0 else int(ts.min()) // DAY_SECONDS * DAY_SECONDS
    return (ts - origin) // DAY_SECONDS


def _parts(owner: np.ndarray, pos: np.ndarray, indptr: np.ndarray, day: np.ndarray,
           w: Windows, has_time: bool) -> np.ndarray:
    """Part code (PRE, DEVICE, VALID, TEST) of every event. int8 [N]"""
    if w.by == "days":
        if not has_time:
            raise ConfigError("view-windows = 'days' but this dataset has no timestamps (only "
                              "the order of events); use view-windows=position")
        edges = np.array([w.device_day, w.valid_day, w.test_day])
        return np.searchsorted(edges, day, side="right").astype(np.int8)
    return _position_parts(owner, pos, indptr, w)


def _position_parts(owner: np.ndarray, pos: np.ndarray, indptr: np.ndarray,
                    w: Windows) -> np.ndarray:
    size = np.diff(indptr)[owner]                                         # [N] events of owner
    from_end = size - 1 - pos                                             # 0 = last event
    held = w.test_last + w.valid_last
    evaluated = size > held
    part = np.full(len(owner), PRE, np.int8)
    part[evaluated & (from_end < w.test_last)] = TEST
    part[evaluated & (from_end >= w.test_last) & (from_end < held)] = VALID
    rest = np.where(evaluated, size - held, size)                         # [N] training events
    n_device = (np.minimum(w.device_last, rest) if w.device_last > 0
                else np.floor(rest * w.device_frac + 1e-9).astype(np.int64))
    in_rest = from_end - np.where(evaluated, held, 0)                     # 0 = last train event
    part[(in_rest >= 0) & (in_rest < n_device)] = DEVICE
    return part
