"""C3DRec's timeline: global training before T_device, on-device training in [T_device, T_test),
testing after T_test (Sec. 2 and 4.1), as per-stage click sessions.

* Clicks (behaviour ``click``) are non-transactional: those at or after T_device never reach
  the cloud. Buy/cart/fav rows are transactional and may be uploaded (item-CF matrix).
* Old/new users (Sec. 4.1): users whose mean click time is above the ``new_user_quantile``
  quantile of all users' means are new. Tables without real time (ML-1M ``ratings_chrono``)
  draw ``1 - new_user_quantile`` of the users as new with the data seed instead (a mean
  position says nothing about sign-up time). New users never contribute to global training.
* Stages: real time -> ``time_cutoff_split`` at (T_device, T_test); positions -> per-user
  ``positional_cutoff_split`` (``device_frac``, ``test_frac``). Each click is staged by its own
  time, so a session crossing a cutoff is cut in two (no post-T_device click in the cloud).
* Sessions (Sec. 4.1, like GRU4Rec): a new session after an idle gap > 706 s, computed
  within each stage; sessions shorter than ``min_session_len`` are dropped; users with fewer
  than ``min_user_clicks`` clicks in all (we read the paper's "sessions with less than 12
  clicks" as users) are dropped; test clicks on items not in the catalogue (items of any
  click before T_test or any transaction) are removed, as in GRU4Rec.

``TimelineData`` is the simulation's ground truth. The cloud reads ``cloud()``
(``TimelineCloud``: counts, ``is_new``, ``cloud_pre``, ``transactions`` and ``cf_matrix()``;
see ``fedrec.views.base``); device d reads ``device(d)``; ``central`` (every user's
clicks before T_test) exists only for the centralised baselines (Only Global, Global+Personal,
Only Personal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from fedrec.c3drec.itemcf import binary_matrix
from fedrec.data.schema import TRANSACTIONAL, Dataset
from fedrec.data.splits import (
    SESSION_GAP_SECONDS,
    IdMap,
    TimeSplit,
    old_new_users,
    positional_cutoff_split,
    sessionize,
    time_cutoff_split,
)
from fedrec.errors import ConfigError, DataError

CF_SOURCES = ("transactional", "transactional+pre")


@dataclass(frozen=True)
class TimelineConfig:
    """How the interaction table becomes C3DRec's three stages (see the module docstring).

    ``cf_source``: rows of the item-CF matrix: ``transactional`` (the paper) or
    ``transactional+pre`` (also the old users' pre-T_device clicks the cloud already holds;
    for data without transactions, e.g. ML-1M).
    """

    t_device: int = 1512057600
    t_test: int = 1512230400
    device_frac: float = 0.2
    test_frac: float = 0.1
    session_gap: float = SESSION_GAP_SECONDS
    min_session_len: int = 2
    min_user_clicks: int = 12
    new_user_quantile: float = 0.9
    cf_source: str = "transactional"
    max_devices: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.cf_source not in CF_SOURCES:
            raise ConfigError(f"c3drec-cf-source = {self.cf_source!r}; use one of {CF_SOURCES}")
        if self.min_session_len < 2:
            raise ConfigError("c3drec-min-session-len must be >= 2 (a session needs a next click)")
        if self.t_device > self.t_test:
            raise ConfigError(f"c3drec-t-device {self.t_device} is after c3drec-t-test "
                              f"{self.t_test}; need t_device <= t_test")


@dataclass(frozen=True, eq=False)
class Sessions:
    """Ragged click sessions grouped by owner (device id), owners ascending.

    items int64 [N] (contiguous item ids); indptr int64 [S+1]; owner int64 [S] sorted.
    """

    items: np.ndarray
    indptr: np.ndarray
    owner: np.ndarray
    n_owners: int

    def __len__(self) -> int:
        return len(self.owner)

    @property
    def n_events(self) -> int:
        """Next-click targets: every item but the first of each session."""
        return int(len(self.items) - len(self.owner))

    def session(self, s: int) -> np.ndarray:
        return self.items[self.indptr[s]:self.indptr[s + 1]]

    def of(self, d: int) -> list[np.ndarray]:
        """Sessions of owner ``d`` in time order."""
        lo, hi = np.searchsorted(self.owner, [d, d + 1])
        return [self.session(s) for s in range(lo, hi)]

    def all(self) -> list[np.ndarray]:
        return [self.session(s) for s in range(len(self))]

    def where(self, owners: np.ndarray) -> Sessions:
        """Sessions whose owner's flag in ``owners`` (bool [n_owners]) is True."""
        return _subset(self, np.asarray(owners, bool)[self.owner])


def _subset(s: Sessions, keep: np.ndarray) -> Sessions:
    lengths = np.diff(s.indptr)[keep]
    rows = np.repeat(keep, np.diff(s.indptr))
    return Sessions(s.items[rows], np.r_[0, np.cumsum(lengths)].astype(np.int64),
                    s.owner[keep], s.n_owners)


def concat(a: Sessions, b: Sessions) -> Sessions:
    """Both sets of sessions, grouped by owner; within an owner ``a``'s come first."""
    key = np.r_[a.owner * 2, b.owner * 2 + 1]
    order = np.argsort(key, kind="stable")
    lengths = np.r_[np.diff(a.indptr), np.diff(b.indptr)][order]
    pieces = a.all() + b.all()
    items = np.concatenate([pieces[i] for i in order] + [np.zeros(0, np.int64)])
    return Sessions(items, np.r_[0, np.cumsum(lengths)].astype(np.int64),
                    np.r_[a.owner, b.owner][order], a.n_owners)


@dataclass(frozen=True)
class DeviceTimeline:
    """What device ``device_id`` holds: its own click sessions in [T_device, T_test) (train)
    and after T_test (test, held out)."""

    device_id: int
    is_new: bool
    train: list[np.ndarray]
    test: list[np.ndarray]


@dataclass(frozen=True, eq=False)
class TimelineCloud:
    """What the cloud may read: old users' pre-T_device click sessions, the transactional
    matrix (binary [U, I]) and which users are new (bool [U])."""

    n_devices: int
    n_items: int
    is_new: np.ndarray
    cloud_pre: Sessions
    transactions: sp.csr_matrix
    cf_source: str = "transactional"

    def cf_matrix(self) -> sp.csr_matrix:
        """The cloud's item-CF matrix (``cf_source``): purchases [+ old users' pre clicks]."""
        if self.cf_source == "transactional":
            return self.transactions
        s = self.cloud_pre
        pre = binary_matrix(np.repeat(s.owner, np.diff(s.indptr)), s.items, self.n_devices,
                            self.n_items)
        return sp.csr_matrix(((self.transactions + pre) > 0).astype(np.float64))


@dataclass(frozen=True, eq=False)
class TimelineData:
    """The three stages with contiguous ids (device id = user id). See the module docstring."""

    n_items: int
    user_map: IdMap
    item_map: IdMap
    is_new: np.ndarray           # bool [U]
    cloud_pre: Sessions          # old users' click sessions before T_device (global training)
    device_train: Sessions       # every user's click sessions in [T_device, T_test)
    test: Sessions               # every user's click sessions after T_test
    central: Sessions            # every user's click sessions before T_test (baselines only)
    transactions: sp.csr_matrix  # binary [U, I], transactional rows before T_test
    cf_source: str = "transactional"

    @property
    def n_devices(self) -> int:
        return len(self.user_map)

    def device(self, d: int) -> DeviceTimeline:
        return DeviceTimeline(d, bool(self.is_new[d]), self.device_train.of(d), self.test.of(d))

    def cloud(self) -> TimelineCloud:
        return TimelineCloud(self.n_devices, self.n_items, self.is_new, self.cloud_pre,
                             self.transactions, self.cf_source)

    def cf_matrix(self) -> sp.csr_matrix:
        """The cloud's item-CF matrix (``TimelineCloud.cf_matrix``)."""
        return self.cloud().cf_matrix()


def _new_users(clicks: pd.DataFrame, users: np.ndarray, has_time: bool, q: float,
               seed: int) -> np.ndarray:
    """Raw ids of the new users among ``users`` (sorted)."""
    if has_time:
        return old_new_users(clicks, q)[1]
    n_new = round((1.0 - q) * len(users))
    return np.sort(np.random.default_rng([seed, 4]).choice(users, n_new, replace=False))


def _stage_sessions(frame: pd.DataFrame, gap: float, min_len: int,
                    vocab: np.ndarray | None = None) -> pd.DataFrame:
    """Rows of sessions (``sid`` column added) that keep >= min_len clicks; with ``vocab``,
    clicks on other items are removed first (sessions are cut before removal)."""
    out = frame.assign(sid=sessionize(frame, gap))
    if vocab is not None:
        out = out[np.isin(out["item"].to_numpy(), vocab)]
    size = out.groupby("sid")["sid"].transform("size")
    return out[size.to_numpy() >= min_len]


def _to_sessions(frame: pd.DataFrame, users: IdMap, items: IdMap) -> Sessions:
    sid = frame["sid"].to_numpy()
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]]) if len(sid) else np.zeros(0, int)
    return Sessions(items.encode(frame["item"]).astype(np.int64),
                    np.r_[starts, len(sid)].astype(np.int64),
                    users.encode(frame["user"].to_numpy()[starts]), len(users))


def _stages(clicks: pd.DataFrame, has_time: bool, cfg: TimelineConfig) -> TimeSplit:
    if has_time:
        return time_cutoff_split(clicks, cfg.t_device, cfg.t_test)
    return positional_cutoff_split(clicks, cfg.device_frac, cfg.test_frac)


def build_timeline(dataset: Dataset, cfg: TimelineConfig) -> TimelineData:
    """Stage, sessionise, filter and reindex ``dataset`` (see the module docstring)."""
    df = dataset.interactions
    clicks = df[(df["behavior"] == "click").to_numpy()]
    counts = clicks.groupby("user").size()
    users = np.sort(counts.index[counts.to_numpy() >= cfg.min_user_clicks].to_numpy())
    if cfg.max_devices > 0:
        users = users[:cfg.max_devices]
    if len(users) == 0:
        raise DataError(f"no user has >= {cfg.min_user_clicks} clicks; lower "
                        "c3drec-min-user-clicks or use more data")
    clicks = clicks[clicks["user"].isin(users).to_numpy()].reset_index(drop=True)
    new = _new_users(clicks, users, dataset.has_time, cfg.new_user_quantile, cfg.seed)
    st = _stages(clicks, dataset.has_time, cfg)
    pre = _stage_sessions(st.pre, cfg.session_gap, cfg.min_session_len)
    dev = _stage_sessions(st.device, cfg.session_gap, cfg.min_session_len)
    tx = df[df["behavior"].isin(TRANSACTIONAL).to_numpy() & df["user"].isin(users).to_numpy()]
    if dataset.has_time:
        tx = tx[(tx["ts"] < cfg.t_test).to_numpy()]
    vocab = np.unique(np.r_[pre["item"], dev["item"], tx["item"]])
    test = _stage_sessions(st.test, cfg.session_gap, cfg.min_session_len, vocab)
    umap, imap = IdMap(users, "user"), IdMap(vocab, "item")
    is_new = np.isin(users, new)
    pre_s, dev_s = _to_sessions(pre, umap, imap), _to_sessions(dev, umap, imap)
    return TimelineData(
        n_items=len(imap), user_map=umap, item_map=imap, is_new=is_new,
        cloud_pre=pre_s.where(~is_new), device_train=dev_s,
        test=_to_sessions(test, umap, imap), central=concat(pre_s, dev_s),
        transactions=binary_matrix(umap.encode(tx["user"]), imap.encode(tx["item"]),
                                   len(umap), len(imap)),
        cf_source=cfg.cf_source,
    )
