"""Shared plumbing of the baselines whose cloud holds one shared model (FedAvg, FedMF,
FedNCF, PFedRec): seeded initial model, and aggregation of each shared parameter by a rule.

Sparse tables (rows uploaded as ``SparseRows`` deltas) use ``row_rule``; every other
shared parameter is averaged densely, weighted by the devices' example counts.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import numpy as np

from clients.device import Arrays, DeviceReply
from clients.embedding import EmbeddingDevice, model_kwargs
from fedrec.models import build_model
from fedrec.models.params import get_arrays
from fedrec.payload import SparseRows, get_sparse  # noqa: F401 (SparseRows in RowRule)
from strategies.aggregation import apply_delta, sparse_row_mean, weighted_mean
from strategies.base import DeviceStrategy

RowRule = Callable[[int, list[SparseRows]], np.ndarray]


class SharedModelStrategy(DeviceStrategy):
    """A cloud model whose shared parameters are updated from device deltas."""

    device_cls: ClassVar[type[EmbeddingDevice]] = EmbeddingDevice
    row_rule: ClassVar[RowRule] = staticmethod(sparse_row_mean)

    def model_name(self) -> str:
        return self.cfg.train.model or self.device_cls.model_name

    def init_global(self) -> Arrays:
        name = self.model_name()
        model = build_model(name, n_users=1, n_items=self.fed.n_items, seed=self.cfg.train.seed,
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
