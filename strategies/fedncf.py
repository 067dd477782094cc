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
"""

from __future__ import annotations

from clients.embedding import EmbeddingDevice
from fedrec.errors import ConfigError
from strategies.aggregation import sparse_row_mean
from strategies.shared_model import SharedModelStrategy


def require_ncf(model: str) -> str:
    """The run's ``model`` key must name NeuMF (or be empty)."""
    if model not in ("", "ncf"):
        raise ConfigError(f"fedncf trains NeuMF, not model={model!r}; "
                          "set model=ncf or leave it empty")
    return "ncf"


class FedNCFDevice(EmbeddingDevice):
    """NeuMF device: item tables as touched rows, MLP/output layers dense."""

    model_name = "ncf"
    sparse_tables = ("item_gmf.weight", "item_mlp.weight")

    def __init__(self, cfg, fed) -> None:  # noqa: ANN001 (RunConfig, federated data)
        require_ncf(cfg.train.model)
        super().__init__(cfg, fed)


class FedNCF(SharedModelStrategy):
    """FedNCF with MF-FedAvg aggregation (see the module docstring)."""

    name = "fedncf"
    device_cls = FedNCFDevice
    default_model = "ncf"
    row_rule = staticmethod(sparse_row_mean)

    def model_name(self) -> str:
        return require_ncf(self.cfg.train.model)
