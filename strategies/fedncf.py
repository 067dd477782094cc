"""FedNCF (Perifanis & Efraimidis, "Federated Neural Collaborative Filtering",
Knowledge-Based Systems 2022).

The model is NeuMF (He et al. 2017). Both user embeddings (GMF and MLP towers) stay on the
device. Each device uploads the changes of the item rows it touched in local training
(positives and sampled negatives) for both item tables, and the dense changes of the MLP
tower and the output layer.

Aggregation: the paper decomposes the aggregation step into a matrix-factorisation part
and a neural-network part ("MF-FedAvg"): plain FedAvg over whole item tables dilutes an
item's update by every device that never saw the item, so item rows are averaged over the
devices that touched them (FedMF's rule, ``sparse_row_mean``), while the MLP and output
layers get FedAvg's example-weighted mean. Its secure aggregation (masking) is not simulated.

Step sizes (our choice, not the paper's): local SGD on the batch-mean BCE gives an item row
a gradient of order 1/batch per appearance, and the per-row mean leaves each row about one
local step per round, so with one learning rate the item tables barely move (HR@10 stayed
at chance, 0.10, for 10 rounds on 1,000 ML-1M devices at lr 0.1-10). As PFedRec's authors
do for their item table, the item tables use ``lr * fedncf-item-lr-scale`` (default 300;
HR@10 0.46 after 10 rounds on the same devices with lr 1) and the layers ``lr`` (default 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from clients.embedding import EmbeddingDevice
from clients.trainer import OPTIMIZERS
from fedrec.config import protocol_options
from fedrec.errors import ConfigError
from strategies.aggregation import sparse_row_mean
from strategies.shared_model import SharedModelStrategy


def require_ncf(model: str) -> str:
    """The run's ``model`` key must name NeuMF (or be empty)."""
    if model not in ("", "ncf"):
        raise ConfigError(f"fedncf trains NeuMF, not model={model!r}; "
                          "set model=ncf or leave it empty")
    return "ncf"


@dataclass(frozen=True)
class FedNCFConfig:
    """FedNCF options (run-config keys ``fedncf-<field>``, defaults in pyproject.toml;
    ``cfg.protocol`` of a FedNCF run).

    item_lr_scale: the item tables' learning rate is ``lr * item_lr_scale``.
    user_lr_scale: the private user embeddings' learning rate is ``lr * user_lr_scale``.
    optimizer: local optimiser, ``sgd`` or ``adam`` (torch defaults, fresh every round).
    """

    item_lr_scale: float = 300.0
    user_lr_scale: float = 1.0
    optimizer: str = "sgd"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"fedncf-optimizer={self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        for key, value in (("item", self.item_lr_scale), ("user", self.user_lr_scale)):
            if value <= 0:
                raise ConfigError(f"fedncf-{key}-lr-scale must be > 0 (1 = the layers' rate)")


class FedNCFDevice(EmbeddingDevice):
    """NeuMF device: item tables as touched rows, MLP/output layers dense."""

    model_name = "ncf"
    sparse_tables = ("item_gmf.weight", "item_mlp.weight")
    user_tables = ("user_gmf.weight", "user_mlp.weight")

    def __init__(self, cfg, fed) -> None:
        require_ncf(cfg.train.model)
        super().__init__(cfg, fed)
        opts = protocol_options(cfg, FedNCFConfig)
        self.item_lr = cfg.train.lr * opts.item_lr_scale
        self.user_lr = cfg.train.lr * opts.user_lr_scale
        self._optimizer = opts.optimizer

    def optimizer(self) -> str:
        return self._optimizer

    def lrs(self) -> dict[str, float]:
        """Per-parameter learning rates for ``clients.trainer.train_local``."""
        return {**{name: self.item_lr for name in self.sparse_tables},
                **{name: self.user_lr for name in self.user_tables}}


class FedNCF(SharedModelStrategy):
    """FedNCF with MF-FedAvg aggregation (see the module docstring)."""

    name = "fedncf"
    device_cls = FedNCFDevice
    default_model = "ncf"
    default_lr = 1.0   # the layers' step; item tables: lr * fedncf-item-lr-scale
    options = FedNCFConfig
    prefix = "fedncf-"
    row_rule = staticmethod(sparse_row_mean)

    def model_name(self) -> str:
        return require_ncf(self.cfg.train.model)
