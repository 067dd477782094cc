"""Per-device views of a split dataset: what each simulated device holds.

``LeaveOneOutData`` serves the leave-one-out baselines (FedAvg/FedMF/FedNCF/PFedRec):
device d == contiguous user d holds its training items in chronological order, one
validation item, one test item and, for the sampled protocol, the evaluation negatives
drawn once per user (seeded) and reused every round: test negatives from ``seed`` (as they
have always been drawn, so published test metrics are unchanged), validation negatives
from the independent stream ``[seed, 1]``, both excluding every item the user saw. A device
sees only its own rows (``device(d)``); the cloud reads ``cloud()`` (``LooCloud``: the
device and item counts and the public item popularity), see ``fedrec.views.base``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from fedrec.config import DataConfig
from fedrec.data.schema import Dataset
from fedrec.data.splits import Split, kcore, leave_one_out, train_matrix
from fedrec.errors import ConfigError
from fedrec.metrics import sample_negatives


@dataclass(frozen=True)
class DeviceData:
    """One device's own data. Items are contiguous ids.

    train_items: int64 [n] chronological (may repeat); valid_item / test_item: -1 if none;
    negatives: int64 [N] the TEST item's evaluation negatives (sampled protocol) or None
    (full ranking); valid_negatives: int64 [N] the validation item's, drawn independently
    (None: full ranking, or a device made by hand, e.g. an attacker's fake profile).
    """

    device_id: int
    train_items: np.ndarray
    valid_item: int
    test_item: int
    negatives: np.ndarray | None
    valid_negatives: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class LooCloud:
    """What the cloud may read of a leave-one-out view. item_popularity: int64 [n_items]
    training interactions per item (a public statistic: attacks and plots read it)."""

    n_devices: int
    n_items: int
    item_popularity: np.ndarray


class LeaveOneOutData:
    """Leave-one-out split held as flat arrays; ``device(d)`` slices one user's rows."""

    def __init__(self, split: Split, protocol: str, n_negatives: int, seed: int) -> None:
        self.n_devices = split.n_users
        self.n_items = split.n_items
        self.protocol = protocol
        users = split.train["user"].to_numpy()
        self._train = split.train["item"].to_numpy().astype(np.int64)              # [N_train]
        self._indptr = np.searchsorted(users, np.arange(self.n_devices + 1))       # [U+1]
        self._valid = _per_user(split.valid, self.n_devices)                        # [U]
        self._test = _per_user(split.test, self.n_devices)                          # [U]
        #: training interactions per item [n_items] (public statistics for attacks/plots)
        self.item_popularity = np.bincount(self._train, minlength=self.n_items)
        self._negatives = self._valid_negatives = None
        if protocol == "sampled":
            seen = train_matrix(split).tolil()
            for part in (split.valid, split.test):
                seen[part["user"].to_numpy(), part["item"].to_numpy()] = 1
            seen = seen.tocsr()
            check_eval_negatives(self.n_items, seen, n_negatives)
            self._negatives = sample_negatives(self.n_items, seen, n_negatives, seed)  # test
            # default_rng([seed, 1]): a stream independent of the test draw's default_rng(seed)
            self._valid_negatives = sample_negatives(self.n_items, seen, n_negatives,
                                                     [seed, 1])  # type: ignore[arg-type]

    def device(self, d: int) -> DeviceData:
        lo, hi = self._indptr[d], self._indptr[d + 1]
        negs = None if self._negatives is None else self._negatives[d]
        valid = None if self._valid_negatives is None else self._valid_negatives[d]
        return DeviceData(d, self._train[lo:hi], int(self._valid[d]), int(self._test[d]), negs,
                          valid)

    def cloud(self) -> LooCloud:
        return LooCloud(self.n_devices, self.n_items, self.item_popularity)

    def train_count(self, d: int) -> int:
        return int(self._indptr[d + 1] - self._indptr[d])


def check_eval_negatives(n_items: int, seen: sp.csr_matrix, n_negatives: int) -> None:
    """The sampled protocol draws ``eval-negatives`` items each user never saw: say which
    setting to change when some user has fewer (e.g. the synthetic ``tiny`` set and 99)."""
    free = n_items - np.diff(seen.indptr)                                      # [U]
    if len(free) and free.min() < n_negatives:
        u = int(np.argmin(free))
        raise ConfigError(f"eval-negatives = {n_negatives} but device {u} has only {free[u]} "
                          f"items it never saw ({n_items} items); pass --set eval-negatives="
                          f"{free[u]} or less, or --set eval-protocol=full")


def _per_user(part, n_users: int) -> np.ndarray:
    out = np.full(n_users, -1, dtype=np.int64)
    out[part["user"].to_numpy()] = part["item"].to_numpy()
    return out


def load_for_run(cfg: DataConfig) -> Dataset:
    """The dataset a run names: a preset, a path, or the synthetic generator."""
    if cfg.dataset == "synthetic" or cfg.dataset.startswith("synthetic-"):
        from fedrec.data.synthetic import generate, preset

        size = cfg.dataset.removeprefix("synthetic-") if "-" in cfg.dataset else cfg.synthetic_size
        users = {"n_users": cfg.synthetic_users} if cfg.synthetic_users else {}
        return generate(preset(size, seed=cfg.seed, **users))
    from fedrec.data.registry import load_dataset

    return load_dataset(cfg.dataset, data_root=cfg.data_root or None)


def subset_users(df, max_devices: int):
    """Keep the first ``max_devices`` users in sorted raw-id order (0 = all)."""
    if max_devices <= 0:
        return df
    keep = np.sort(df["user"].unique())[:max_devices]
    return df[df["user"].isin(keep)].reset_index(drop=True)


@functools.lru_cache(maxsize=4)
def prepare_loo(cfg: DataConfig) -> LeaveOneOutData:
    """Load, filter, split and sample negatives once per process (cached by config)."""
    df = subset_users(load_for_run(cfg).interactions, cfg.max_devices)
    df = kcore(df, min_user=cfg.min_user_interactions, min_item=1)
    return LeaveOneOutData(leave_one_out(df), cfg.eval_protocol, cfg.eval_negatives, cfg.seed)
