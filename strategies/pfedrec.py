"""PFedRec (Zhang et al., "Dual Personalization on Federated Recommendation", IJCAI 2023).

Each device holds a private score function (no user embedding) and fine-tunes the item
embeddings locally with a larger learning rate (clients.pfedrec_device). The cloud keeps
only the item table: it is the plain mean of the participants' item tables, as in the
authors' code. In delta form a device sends the rows it touched and every untouched row
counts as an unchanged copy, i.e. ``sparse_client_mean`` (sum of row changes / number of
participants).

Evaluation uses each device's personalised model from its last local training: the item
table the cloud sent in that round's fit (before aggregation) plus the device's own row
changes, and its own score function. A device that did not train in the evaluated round
(fraction-fit < 1, dropouts) adds its older row changes to this round's table; the
authors' code evaluates its whole stale table instead (identical with full participation).
Options: ``pfedrec-lr-eta``, ``pfedrec-scale-by-items``, ``pfedrec-vectorised``.
"""

from __future__ import annotations

from typing import Any

from clients.pfedrec_device import PREFIX, PFedRecConfig, PFedRecDevice, require_pfedrec
from fedrec.config import RunConfig
from fedrec.protocol import Arrays
from fedrec.results import RunRecorder
from strategies.aggregation import sparse_client_mean
from strategies.shared_model import SharedModelStrategy


class PFedRec(SharedModelStrategy):
    """PFedRec: mean of item tables over participants; personalised evaluation."""

    name = "pfedrec"
    device_cls = PFedRecDevice
    default_model = "pfedrec"
    default_lr = 0.1  # the authors' lr; item-table lr = lr * pfedrec-lr-eta * n_items
    options = PFedRecConfig
    prefix = PREFIX
    row_rule = staticmethod(sparse_client_mean)

    def __init__(self, *, cfg: RunConfig, fed: Any, recorder: RunRecorder) -> None:
        super().__init__(cfg=cfg, fed=fed, recorder=recorder)
        self._fit_table: Arrays | None = None   # the global table of the latest fit round

    def model_name(self) -> str:
        require_pfedrec(self.cfg.train.model)
        return "pfedrec"

    def fit_broadcast(self, rnd: int) -> Arrays:
        # aggregate() replaces (never mutates) the arrays: a shallow copy keeps this round's table
        self._fit_table = dict(self.global_arrays)
        return self._fit_table

    def eval_broadcast(self, rnd: int) -> Arrays:
        """The table the devices trained from this round, to which they add their own changes."""
        return self.global_arrays if self._fit_table is None else self._fit_table
