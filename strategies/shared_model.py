"""Shared plumbing of the baselines whose cloud holds one shared model (FedAvg, FedMF,
FedNCF, PFedRec): seeded initial model, and aggregation of each shared parameter by a rule.

Sparse tables (rows uploaded as ``SparseRows`` deltas) use ``row_rule``; every other
shared parameter is averaged densely, weighted by the devices' example counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from clients.embedding import EmbeddingDevice, model_kwargs
from fedrec.models import build_model
from fedrec.models.params import get_arrays
from fedrec.payload import SparseRows, get_sparse
from fedrec.protocol import Arrays, DeviceReply
from fedrec.reduce import ReduceSpec, Totals
from strategies.aggregation import (
    SumsRule,
    apply_delta,
    client_mean_of_sums,
    row_mean_of_sums,
    sparse_client_mean,
    sparse_row_mean,
    weighted_mean,
)
from strategies.base import DeviceStrategy

RowRule = Callable[[int, list[SparseRows]], np.ndarray]

#: row rules that need only per-row sums and counts, and the same rule on those totals
SUMS_RULES: dict[RowRule, SumsRule] = {sparse_row_mean: row_mean_of_sums,
                                       sparse_client_mean: client_mean_of_sums}


class SharedModelStrategy(DeviceStrategy):
    """A cloud model whose shared parameters are updated from device deltas."""

    device_cls: ClassVar[type[EmbeddingDevice]] = EmbeddingDevice
    #: the rule for sparse tables (a staticmethod, so ``self.row_rule`` binds no self)
    row_rule: ClassVar[staticmethod[[int, list[SparseRows]], np.ndarray]] = staticmethod(
        sparse_row_mean)

    def model_name(self) -> str:
        return self.cfg.train.model or self.device_cls.model_name

    def init_global(self) -> Arrays:
        name = self.model_name()
        model = build_model(name, n_users=1, n_items=self.cloud.n_items, seed=self.cfg.train.seed,
                            **model_kwargs(name, self.cfg.train.embedding_dim))
        return get_arrays(model, model.shared_parameter_names())

    def aggregate(self, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        for name, param in self.global_arrays.items():
            if name in self.device_cls.sparse_tables:
                rows = [get_sparse(r.upload, name) for r in replies]
                delta = self.row_rule(len(param), rows).reshape(param.shape)
            else:
                delta = weighted_mean([r.upload[name] for r in replies],
                                      [r.num_examples for r in replies])
            self.global_arrays[name] = apply_delta(param, delta, self.cfg.train.server_lr)
        return {}

    def reduce_spec(self) -> ReduceSpec | None:
        """Cohorts may send sums when ``aggregate`` is this class's own and its row rule has a
        sums form (a subclass that overrides ``aggregate``, e.g. a defence, sees every upload)."""
        if type(self).aggregate is not SharedModelStrategy.aggregate or self.row_rule not in SUMS_RULES:
            return None
        sparse = {n: len(p) for n, p in self.global_arrays.items() if n in self.device_cls.sparse_tables}
        return {"sparse": sparse, "dense": [n for n in self.global_arrays if n not in sparse]}

    def aggregate_totals(self, rnd: int, totals: Totals) -> dict[str, float]:
        """``aggregate`` computed from the cohorts' summed uploads."""
        rule = SUMS_RULES[self.row_rule]
        for name, param in self.global_arrays.items():
            if name in totals.rows:
                delta = rule(*totals.rows[name], totals.devices).reshape(param.shape)
            elif name in totals.dense and totals.weight > 0:
                delta = totals.dense[name] / totals.weight       # example-weighted mean
            else:
                continue
            self.global_arrays[name] = apply_delta(param, delta, self.cfg.train.server_lr)
        return {}
