"""FedAvg (McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS 2017) over the whole shared model.

Every shared parameter travels dense both ways, the item tables included: a device
downloads the full model, trains it locally (BCE with sampled negatives), and uploads the
dense change of every shared parameter. The cloud applies the example-weighted mean of the
changes (Flower's ``aggregate``, in float64). Private parameters
(``model.private_parameter_names()``, e.g. the user vector of MF) stay on the device.
Default model MF; ``model=ncf`` and ``model=pfedrec`` also work (for PFedRec's model the
score function is the private part).

With ``server-lr = 1`` the update equals McMahan's weighted average of the devices' models;
averaging deltas instead of models keeps float32 rounding out of the sum.
"""

from __future__ import annotations

import numpy as np

from clients.embedding import EmbeddingDevice
from fedrec.protocol import DeviceReply
from strategies.aggregation import apply_delta, weighted_mean
from strategies.shared_model import SharedModelStrategy

#: float64 elements per copy that one ``weighted_mean`` call may hold (~128 MiB)
BLOCK_ELEMENTS = 1 << 24


class FedAvgDevice(EmbeddingDevice):
    """Uploads every shared parameter as a dense delta (no sparse tables)."""

    model_name = "mf"
    sparse_tables = ()


def blockwise_weighted_mean(deltas: list[np.ndarray], weights: list[int],
                            budget: int = BLOCK_ELEMENTS) -> np.ndarray:
    """Flower's example-weighted mean, taken over row blocks of the arrays.

    ``weighted_mean`` (Flower's ``aggregate``) is elementwise, so slicing rows gives the
    same bits, while the float64 copies it makes stay within ``budget`` elements instead of
    ``len(deltas) x`` the array (6,040 dense ML-1M item tables would need 11 GB).
    deltas: same-shape arrays [R, ...]; returns float64 of that shape.
    """
    shape = deltas[0].shape
    flat = [d.reshape(shape[0] if d.ndim else 1, -1) for d in deltas]   # [R, E] views
    rows, per_row = flat[0].shape
    block = max(1, budget // max(1, len(flat) * per_row))
    out = np.empty((rows, per_row), dtype=np.float64)
    for lo in range(0, rows, block):
        out[lo:lo + block] = weighted_mean([f[lo:lo + block] for f in flat], weights)
    return out.reshape(shape)


class FedAvg(SharedModelStrategy):
    """FedAvg of the whole shared model; dense uploads, example-weighted mean.

    Parameters are those of ``DeviceStrategy`` (``cfg``, ``fed``, ``recorder``).
    """

    name = "fedavg"
    device_cls = FedAvgDevice

    def aggregate(self, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        weights = [r.num_examples for r in replies]
        for name, param in self.global_arrays.items():
            delta = blockwise_weighted_mean([r.upload[name] for r in replies], weights)
            self.global_arrays[name] = apply_delta(param, delta, self.cfg.train.server_lr)
        return {}
