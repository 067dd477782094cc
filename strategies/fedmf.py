"""FedMF (Chai et al., "Secure Federated Matrix Factorization", IEEE Intelligent Systems 2020).

The user vector never leaves the device; each device uploads the change of the item
embeddings (and item biases) for the items it touched in local training (its positives and
sampled negatives), and the cloud averages each row over the devices that sent it.
Local objective: BCE with ``num-negatives`` sampled negatives per positive (as in the
PFedRec paper's FedMF baseline). Homomorphic encryption of the original is not simulated.
"""

from __future__ import annotations

from clients.embedding import EmbeddingDevice
from strategies.aggregation import sparse_row_mean
from strategies.shared_model import SharedModelStrategy


class FedMFDevice(EmbeddingDevice):
    model_name = "mf"
    sparse_tables = ("item_emb.weight", "item_bias")


class FedMF(SharedModelStrategy):
    name = "fedmf"
    device_cls = FedMFDevice
    row_rule = staticmethod(sparse_row_mean)
