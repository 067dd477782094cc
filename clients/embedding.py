"""On-device logic shared by the embedding baselines (FedAvg, FedMF, FedNCF, PFedRec).

The device rebuilds its model from the cloud's shared arrays and its own private arrays,
trains locally (clients.trainer), and uploads the change of the shared parameters:
* tables named in ``sparse_tables`` as the rows it touched (SparseRows deltas, FedMF-style),
* every other shared parameter as a dense delta.
Private parameters (``model.private_parameter_names()``) stay in the device's state.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from clients.batched import cohort_steps, stack_params, train_cohort
from clients.device import DeviceLogic
from clients.trainer import LocalTrainConfig, local_examples, score_items, train_local
from fedrec.errors import ConfigError
from fedrec.models import build_model
from fedrec.models.base import RecModel
from fedrec.models.params import get_arrays, set_arrays
from fedrec.payload import SparseRows, add_sparse
from fedrec.protocol import FIT, Arrays, DeviceReply, DeviceTask


def model_kwargs(name: str, dim: int) -> dict:
    """Constructor arguments of the pointwise models from the run's ``embedding-dim``."""
    if name == "mf":
        return {"dim": dim, "loss": "bce"}
    if name == "ncf":
        return {"gmf_dim": dim, "mlp_layers": (2 * dim, dim, max(dim // 2, 1))}
    if name == "pfedrec":
        return {"dim": dim}
    raise ConfigError(f"model {name!r} is not a pointwise model for the leave-one-out "
                      "baselines; use model=mf, ncf or pfedrec")


def init_seed(seed: int, device_id: int) -> int:
    """Seed of a device's private initialisation: a function of (run seed, device id)."""
    return int(np.random.default_rng([seed, device_id, 11]).integers(2**31))


class EmbeddingDevice(DeviceLogic):
    """Local BCE training with negative sampling; uploads shared-parameter deltas."""

    scored_model = "global"
    #: shared tables uploaded as touched rows (others travel dense)
    sparse_tables: ClassVar[tuple[str, ...]] = ("item_emb.weight", "item_bias")
    model_name: ClassVar[str] = "mf"

    def __init__(self, cfg, fed) -> None:
        super().__init__(cfg, fed)
        t = cfg.train
        self.train_cfg = LocalTrainConfig(t.local_epochs, t.lr, t.batch_size, t.num_negatives)
        self.model = self.build(seed=0)
        self.private = sorted(self.model.private_parameter_names())
        self.shared = self.model.shared_parameter_names()
        # parameter counts, fixed for the run (walking the modules per device costs ~0.05 ms)
        named = dict(self.model.named_parameters())
        self._n_params = sum(p.numel() for p in named.values())
        self._dense_numel = sum(p.numel() for n, p in named.items()
                                if n not in self.sparse_tables and n not in self.private)

    def build(self, seed: int) -> RecModel:
        name = self.cfg.train.model or self.model_name
        kwargs = model_kwargs(name, self.cfg.train.embedding_dim)
        return build_model(name, n_users=1, n_items=self.fed.n_items, seed=seed, **kwargs)

    def private_init(self, device_id: int) -> Arrays:
        """Seeded fresh private parameters. Built with a one-item table: private parameters
        never depend on the item count, and this is 100x cheaper than a full model."""
        name = self.cfg.train.model or self.model_name
        fresh = build_model(name, n_users=1, n_items=1, seed=init_seed(self.cfg.train.seed, device_id),
                            **model_kwargs(name, self.cfg.train.embedding_dim))
        return get_arrays(fresh, self.private)

    def load(self, task: DeviceTask) -> None:
        """Shared arrays from the cloud, private ones from the device's state."""
        set_arrays(self.model, {n: task.broadcast[n] for n in self.shared})
        state = task.state or self.private_init(task.device_id)
        set_arrays(self.model, {n: state[n] for n in self.private})

    def lrs(self) -> dict[str, float] | None:
        return None

    def optimizer(self) -> str:
        """Local optimiser: ``sgd`` (default) or ``adam`` (clients.trainer.OPTIMIZERS)."""
        return "sgd"

    def fit(self, task: DeviceTask) -> DeviceReply:
        self.load(task)
        data = self.fed.device(task.device_id)
        before = {n: task.broadcast[n] for n in self.shared}
        loss, touched, n_seen = train_local(self.model, data, self.train_cfg, task.rng, self.lrs(),
                                            self.optimizer())
        after = get_arrays(self.model)
        return DeviceReply(
            device_id=task.device_id,
            upload=self.encode_upload(before, after, touched),
            state={n: after[n] for n in self.private},
            metrics={"loss": loss},
            num_examples=n_seen,
            flops=self.train_flops(n_seen),
            peak_mem_bytes=self.memory_bytes(n_seen),
        )

    def encode_upload(self, before: Arrays, after: Arrays, touched: np.ndarray) -> Arrays:
        """Delta of each shared parameter: touched rows for sparse tables, dense otherwise."""
        up: Arrays = {}
        for n in self.shared:
            delta = after[n] - before[n]
            if n in self.sparse_tables:
                rows = delta[touched]
                add_sparse(up, n, SparseRows(touched, rows.reshape(len(touched), -1)))
            else:
                up[n] = delta
        return up

    def run_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        """Fit tasks of a cohort as one vectorised computation (clients.batched)."""
        if tasks and all(t.kind == FIT for t in tasks):
            return self.fit_cohort(tasks)
        return super().run_many(tasks)

    #: devices trained together in one vectorised group; groups are formed by similar example
    #: counts, so short histories do not wait through the steps of long ones
    group_size: ClassVar[int] = 16

    def fit_cohort(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        t = self.train_cfg
        epochs = [[local_examples(self.fed.device(k.device_id), self.fed.n_items, t.num_negatives,
                                  k.rng) for _ in range(t.epochs)] for k in tasks]
        sizes = [sum(len(items) for items, _ in e) for e in epochs]
        order = np.argsort(sizes, kind="stable")
        replies: list[DeviceReply | None] = [None] * len(tasks)
        for lo in range(0, len(order), self.group_size):
            group = order[lo:lo + self.group_size].tolist()
            out = self.fit_group([tasks[i] for i in group], [epochs[i] for i in group])
            for i, r in zip(group, out, strict=True):
                replies[i] = r
        return replies  # type: ignore[return-value]

    def fit_group(self, tasks: list[DeviceTask], epochs: list) -> list[DeviceReply]:
        t = self.train_cfg
        steps = cohort_steps(epochs, t.batch_size, local_rows=bool(self.sparse_tables))
        privates = [k.state or self.private_init(k.device_id) for k in tasks]
        bcast = tasks[0].broadcast
        params = stack_params(self.model, steps, bcast, privates, self.sparse_tables)
        lrs = {n: (self.lrs() or {}).get(n, t.lr) for n, _ in self.model.named_parameters()}
        loss = train_cohort(self.model, steps, params, lrs, self.optimizer())
        replies = []
        for u, task in enumerate(tasks):
            after = {n: params[f"inner.{n}"][u].detach().numpy() for n, _ in self.model.named_parameters()}
            rows = steps.touched[u]
            up: Arrays = {}
            for n in self.shared:
                if n in self.sparse_tables:
                    delta = after[n][: len(rows)] - bcast[n][rows]
                    add_sparse(up, n, SparseRows(rows, delta.reshape(len(rows), -1)))
                else:
                    up[n] = after[n] - bcast[n]
            n_seen = sum(len(items) for items, _ in epochs[u])
            replies.append(DeviceReply(
                device_id=task.device_id, upload=up, state={n: after[n].copy() for n in self.private},
                metrics={"loss": float(loss[u])}, num_examples=n_seen,
                flops=self.train_flops(n_seen), peak_mem_bytes=self.memory_bytes(n_seen)))
        return replies

    def load_scored_model(self, task: DeviceTask) -> None:
        """Put the model this protocol evaluates into ``self.model``: the round's shared
        arrays with the device's private ones."""
        self.load(task)

    def score(self, task: DeviceTask, items: np.ndarray | None = None) -> np.ndarray:
        self.load_scored_model(task)
        return score_items(self.model, items)

    def n_params(self) -> int:
        return self._n_params

    def train_flops(self, n_examples: int) -> float:
        """Forward+backward FLOPs: 3 x 2 x (params touched per example) per example."""
        dim = self.cfg.train.embedding_dim
        return 3.0 * 2.0 * n_examples * (self._dense_numel + 2 * dim)

    def memory_bytes(self, n_examples: int) -> float:
        """Model (float32) + grads (+ Adam's two moments) + a batch of activations."""
        moments = 2 * self.n_params() if self.optimizer() == "adam" else 0
        return 4.0 * (2 * self.n_params() + moments
                      + self.cfg.train.batch_size * 8 * self.cfg.train.embedding_dim)

