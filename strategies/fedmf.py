"""FedMF (Chai et al., "Secure Federated Matrix Factorization", IEEE Intelligent Systems 2020).

The user vector never leaves the device; each device uploads the change of the item
embeddings (and item biases) for the items it touched in local training (its positives and
sampled negatives), and the cloud averages each row over the devices that sent it.
Local objective: BCE with ``num-negatives`` sampled negatives per positive (as in the
PFedRec paper's FedMF baseline). Homomorphic encryption of the original is not simulated.

A cohort of devices trains in one vectorised computation (clients.batched_mf) that gives
the per-device loop's numbers; ``FedMFDevice.fit``/``evaluate`` remain the reference.
"""

from __future__ import annotations

import numpy as np

from clients.batched_mf import build_inputs, score_candidates, train_cohort
from clients.embedding import EmbeddingDevice
from clients.trainer import local_examples
from fedrec.errors import ConfigError
from fedrec.payload import SparseRows, add_sparse
from fedrec.protocol import EVALUATE, FIT, DeviceReply, DeviceTask
from strategies.aggregation import sparse_row_mean
from strategies.shared_model import SharedModelStrategy

USER, ITEM, BIAS = "user_emb.weight", "item_emb.weight", "item_bias"


class FedMFDevice(EmbeddingDevice):
    model_name = "mf"
    sparse_tables = (ITEM, BIAS)

    def __init__(self, cfg, fed) -> None:
        if cfg.train.model not in ("", "mf"):
            raise ConfigError(f"fedmf trains matrix factorisation, not model={cfg.train.model!r}; "
                              "drop the model key or use strategy=fedavg for other models")
        super().__init__(cfg, fed)

    def run_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        if tasks and all(t.kind == FIT for t in tasks):
            return self.fit_cohort(tasks)
        if tasks and all(t.kind == EVALUATE for t in tasks) and self.fed.protocol == "sampled":
            return self.evaluate_many(tasks)
        return super().run_many(tasks)

    def user_vector(self, task: DeviceTask) -> np.ndarray:
        return (task.state or self.private_init(task.device_id))[USER][0]  # [D]

    def fit_cohort(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        t = self.train_cfg
        epochs = [[local_examples(self.fed.device(k.device_id), self.fed.n_items, t.num_negatives, k.rng)
                   for _ in range(t.epochs)] for k in tasks]
        inp = build_inputs([self.user_vector(k) for k in tasks], epochs, t.batch_size)
        emb, bias = tasks[0].broadcast[ITEM], tasks[0].broadcast[BIAS]
        P, Q, C, loss = train_cohort(inp, emb, bias, t.lr)
        Q -= np.take(emb, inp.rows, axis=0)   # [T, D] now every device's row deltas (in place:
        C -= np.take(bias, inp.rows)          # [T]     no second cohort-sized buffer to fault in)
        bounds = inp.owner_offsets.tolist()
        replies = []
        for u, task in enumerate(tasks):
            lo, hi = bounds[u], bounds[u + 1]                                 # device u's rows
            up: dict[str, np.ndarray] = {}
            add_sparse(up, ITEM, SparseRows(inp.rows[lo:hi], Q[lo:hi]))
            add_sparse(up, BIAS, SparseRows(inp.rows[lo:hi], C[lo:hi, None]))
            n_seen = sum(len(items) for items, _ in epochs[u])
            replies.append(DeviceReply(
                device_id=task.device_id, upload=up, state={USER: P[u][None, :].copy()},
                metrics={"loss": float(loss[u])}, num_examples=n_seen,
                flops=self.train_flops(n_seen), peak_mem_bytes=self.memory_bytes(n_seen)))
        return replies

    def score_many(self, tasks: list[DeviceTask], items: np.ndarray | None = None) -> np.ndarray:
        """MF scores of a cohort in one product: p_u . q_i + c_i, float32 [U, C] (or [U, I])."""
        emb, bias = tasks[0].broadcast[ITEM], tasks[0].broadcast[BIAS]
        p = np.stack([self.user_vector(t) for t in tasks])                    # [U, D]
        if items is None:
            return p @ emb.T + bias[None, :]                                 # [U, I]
        return score_candidates(p, emb, bias, items)                         # [U, C]


class FedMF(SharedModelStrategy):
    name = "fedmf"
    device_cls = FedMFDevice
    row_rule = staticmethod(sparse_row_mean)
