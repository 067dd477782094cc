"""Defences as a mixin composed onto a strategy: robust aggregation of device uploads.

Device-level screens keep the protocol's own aggregation over what survives:
  norm-bound   every upload scaled to joint L2 norm <= bound (Sun et al. 2019);
  krum / multi-krum  Krum's choice over whole uploads (all tables + dense parameters;
               absent rows are zero deltas), Blanchard et al. NeurIPS 2017.
Row rules replace the protocol's aggregation of a ``SharedModelStrategy`` (sparse tables
per item row over the devices that sent it, dense parameters by Flower's dense rules):
  median, trimmed-mean (Yin et al. ICML 2018), hics (Yuan et al. SIGIR 2023).
The math is in ``strategies.robust``. Every round record gets detection counts
(``agg_def_flagged``: devices dropped/clipped/flagged; ``agg_def_flagged_malicious``: how
many of those were attackers; ``agg_malicious``: attackers among the round's uploads). The
ground truth comes from the seeded malicious set and is used for these counts only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from clients.attacks.population import malicious_devices
from fedrec.errors import ConfigError
from fedrec.ldp import upload_norm
from fedrec.payload import get_sparse
from fedrec.protocol import Arrays, DeviceReply
from fedrec.threat_config import DefenceConfig, ThreatConfig
from strategies import robust
from strategies.aggregation import apply_delta
from strategies.shared_model import SharedModelStrategy

ROW_DEFENCES = ("median", "trimmed-mean", "hics")


def finite_replies(replies: list[DeviceReply]) -> tuple[list[DeviceReply], list[int]]:
    """Replies whose floating arrays are all finite, and the ids of the others."""
    ok = [r for r in replies if all(np.all(np.isfinite(a)) for a in r.upload.values()
                                    if np.issubdtype(a.dtype, np.floating))]
    return ok, sorted({r.device_id for r in replies} - {r.device_id for r in ok})


def clip_replies(replies: list[DeviceReply], bound: float) -> tuple[list[DeviceReply], list[int]]:
    """Each upload scaled to joint L2 norm <= bound (indices untouched); ids of clipped ones."""
    out, clipped = [], []
    for r in replies:
        norm = upload_norm(r.upload)
        f = min(1.0, bound / norm) if norm > 0 else 1.0
        if f < 1.0:
            clipped.append(r.device_id)
        up = {k: (a * np.asarray(f, a.dtype) if np.issubdtype(a.dtype, np.floating) else a)
              for k, a in r.upload.items()}
        out.append(DeviceReply(device_id=r.device_id, upload=up, metrics=r.metrics,
                               num_examples=r.num_examples))
    return out, clipped


def upload_features(replies: list[DeviceReply], shapes: dict[str, tuple[int, ...]],
                    sparse_tables: tuple[str, ...]) -> sp.csr_matrix:
    """Devices x (all coordinates of the shared model) matrix of the uploads (absent rows 0)."""
    blocks = []
    for name, shape in shapes.items():
        if name in sparse_tables:
            blocks.append(robust.upload_matrix(shape[0], [get_sparse(r.upload, name) for r in replies]))
        else:
            blocks.append(sp.csr_matrix(np.stack([r.upload[name].ravel() for r in replies]).astype(np.float64)))
    return sp.hstack(blocks, format="csr")


def krum_keep(replies: list[DeviceReply], features: sp.csr_matrix, dcfg: DefenceConfig
              ) -> tuple[list[DeviceReply], list[int]]:
    """Krum (one upload) or Multi-Krum (n - f uploads); f = floor(krum_fraction * n)."""
    n = len(replies)
    f = math.floor(dcfg.krum_fraction * n)
    to_keep = 0 if dcfg.kind == "krum" else max(1, n - f)
    chosen = robust.krum_select(robust.pairwise_sq_distances(features), f, to_keep)
    kept = [replies[i] for i in chosen]
    return kept, sorted({r.device_id for r in replies} - {r.device_id for r in kept})


RowRule = Callable[[int, list], tuple[np.ndarray, dict]]
DenseRule = Callable[[list], tuple[list[np.ndarray], dict]]


def row_rules(dcfg: DefenceConfig) -> tuple[RowRule, DenseRule]:
    """The sparse row rule and the dense rule of a row defence."""
    if dcfg.kind == "median":
        return robust.coordinate_median, robust.dense_median
    if dcfg.kind == "trimmed-mean":
        return (partial(robust.trimmed_mean, beta=dcfg.beta),
                partial(robust.dense_trimmed_mean, beta=dcfg.beta))
    rule = partial(robust.hics, row_bound=dcfg.hics_row_bound, agg_bound=dcfg.hics_agg_bound,
                   keep_fraction=dcfg.hics_keep)
    return rule, partial(robust.dense_norm_bound, bound=dcfg.hics_agg_bound)


def flagged_by_rows(info: dict, ids: list[int]) -> set[int]:
    """Devices a row rule singled out (HiCS: at least one row clipped in stage 1)."""
    per = info.get("row_clipped_per_device")
    return {ids[i] for i, c in enumerate(per or []) if c > 0}


class RobustAggregation:
    """Mixin (put before the strategy class) applying ``threat.defence``."""

    threat: ClassVar[ThreatConfig]
    global_arrays: Arrays
    device_cls: Any
    cfg: Any
    n_devices: int

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.threat.defence.kind in ROW_DEFENCES and not isinstance(self, SharedModelStrategy):
            raise ConfigError(f"defence={self.threat.defence.kind} needs a strategy with a shared "
                              "model (SharedModelStrategy); use one, or defence=norm-bound")
        a = self.threat.attack
        fraction = a.fraction if a.kind != "none" else 0.0
        self.truth = frozenset(malicious_devices(self.n_devices, fraction, self.cfg.train.seed).tolist())

    def aggregate(self, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        dcfg = self.threat.defence
        kept, flagged = finite_replies(replies)
        if not kept:
            metrics: dict[str, float] = {}
        elif dcfg.kind == "norm-bound":
            kept, clipped = clip_replies(kept, dcfg.bound)
            metrics = super().aggregate(rnd, kept)  # type: ignore[misc]
            flagged += clipped
        elif dcfg.kind in ("krum", "multi-krum"):
            shapes = {k: v.shape for k, v in self.global_arrays.items()}
            feats = upload_features(kept, shapes, tuple(getattr(self.device_cls, "sparse_tables", ())))
            kept, dropped = krum_keep(kept, feats, dcfg)
            metrics = super().aggregate(rnd, kept)  # type: ignore[misc]
            flagged += dropped
        else:
            metrics, rows_flagged = self.aggregate_rows(kept, dcfg)
            flagged += sorted(rows_flagged)
        return {**metrics, **detection_counts(replies, set(flagged), self.truth)}

    def aggregate_rows(self, replies: list[DeviceReply], dcfg: DefenceConfig) -> tuple[dict, set[int]]:
        """Robust row rule on the sparse tables, Flower's dense rule on the other params."""
        row_rule, dense_rule = row_rules(dcfg)
        ids = [r.device_id for r in replies]
        flagged: set[int] = set()
        for name, param in self.global_arrays.items():
            if name in self.device_cls.sparse_tables:
                delta, info = row_rule(len(param), [get_sparse(r.upload, name) for r in replies])
                flagged |= flagged_by_rows(info, ids)
            else:
                delta = dense_rule([[r.upload[name]] for r in replies])[0][0]
            self.global_arrays[name] = apply_delta(param, delta.reshape(param.shape),
                                                   self.cfg.train.server_lr)
        return {}, flagged


def detection_counts(replies: list[DeviceReply], flagged: set[int], truth: frozenset[int]
                     ) -> dict[str, float]:
    """How many uploads were flagged, how many of those were malicious, how many attackers."""
    ids = {r.device_id for r in replies}
    bad = ids & truth
    return {"def_flagged": float(len(flagged)), "def_flagged_malicious": float(len(flagged & bad)),
            "malicious": float(len(bad))}
