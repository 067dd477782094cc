"""PFedRec's on-device half (Zhang et al., "Dual Personalization on Federated
Recommendation", IJCAI 2023), as in the authors' code (Zhangcx19/IJCAI-23-PFedRec).

Per mini-batch a device takes two SGD steps on the BCE loss:
1. the score function (private, a Linear layer + sigmoid) with learning rate ``lr``;
2. after a fresh forward pass with the updated score function, the item embeddings with
   ``item_lr = lr * lr_eta * n_items`` (``pfedrec-lr-eta``; the ``n_items`` factor can be
   switched off with ``pfedrec-scale-by-items=false``).
The device uploads the change of the item rows it touched; the cloud averages item tables
over the round's participants. For evaluation the device keeps its personalised item rows
(their change from the round's global table, in its private state) next to its score
function: it evaluates with the global table it was sent in that round's fit plus those
changes, i.e. with the model it ended local training with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from clients.batched_mf import build_inputs
from clients.device import DeviceLogic
from clients.embedding import EmbeddingDevice
from clients.pfedrec_batched import B, W, rng_copy, score_cohort, score_vector, train_cohort
from clients.trainer import ZERO_USER, LocalTrainConfig, local_examples
from fedrec.config import protocol_options
from fedrec.errors import ConfigError
from fedrec.federated import DeviceData
from fedrec.models import build_model
from fedrec.models.base import Batch, RecModel
from fedrec.models.params import get_arrays
from fedrec.payload import SparseRows, add_sparse, get_sparse
from fedrec.protocol import FIT, Arrays, DeviceReply, DeviceTask

PREFIX = "pfedrec-"
ITEM_TABLE = "item_emb.weight"
#: private-state key of the device's personalised item rows (change from the global table)
PERSONAL = "personal." + ITEM_TABLE


@dataclass(frozen=True)
class PFedRecConfig:
    """PFedRec options (run-config keys ``pfedrec-<field>``, defaults in pyproject.toml;
    ``cfg.protocol`` of a PFedRec run).

    lr_eta: item-embedding learning rate factor (the authors' ``lr_eta``, default 80).
    scale_by_items: multiply the item learning rate by the number of items (authors' code).
    vectorised: train a cohort's devices as one batched computation (same numbers as the loop).
    """

    lr_eta: float = 80.0
    scale_by_items: bool = True
    vectorised: bool = True

    def __post_init__(self) -> None:
        if self.lr_eta <= 0:
            raise ConfigError("pfedrec-lr-eta must be > 0; the authors' default is 80")


def item_lr(lr: float, n_items: int, pcfg: PFedRecConfig) -> float:
    """Learning rate of the item embeddings: ``lr * lr_eta * (n_items if scale_by_items)``."""
    return lr * pcfg.lr_eta * (n_items if pcfg.scale_by_items else 1)


def score_parameters(model: RecModel) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if n.startswith("score_fn.")]


def alternating_step(model: RecModel, batch: Batch, lr: float, lr_item: float) -> float:
    """One PFedRec mini-batch: SGD on the score function, then a fresh forward pass and SGD
    on the item table. Returns the second (item-step) loss, as the authors report."""
    score = score_parameters(model)
    grads = torch.autograd.grad(model.loss(batch), score)
    with torch.no_grad():
        for p, g in zip(score, grads, strict=True):
            p.sub_(lr * g)
    loss_i = model.loss(batch)
    table = model.get_parameter(ITEM_TABLE)                            # [I, D]
    (g_item,) = torch.autograd.grad(loss_i, [table])                   # [I, D], zero off-batch
    with torch.no_grad():
        table.sub_(lr_item * g_item)
    return loss_i.item()


def train_alternating(model: RecModel, data: DeviceData, cfg: LocalTrainConfig, lr_item: float,
                      rng: np.random.Generator) -> tuple[float, np.ndarray, int]:
    """Local epochs of PFedRec's two-step SGD on BCE with ``cfg.num_negatives`` negatives.

    Returns (mean loss of the last epoch, touched item ids [T] sorted, examples seen), like
    ``clients.trainer.train_local``.
    """
    touched: list[np.ndarray] = []
    seen, last_loss = 0, float("nan")
    for _ in range(cfg.epochs):
        items, labels = local_examples(data, model.n_items, cfg.num_negatives, rng)
        touched.append(items)
        total = 0.0
        for lo in range(0, len(items), cfg.batch_size):
            it = torch.from_numpy(items[lo:lo + cfg.batch_size])
            batch = Batch(users=ZERO_USER.expand(len(it)), items=it,
                          labels=torch.from_numpy(labels[lo:lo + cfg.batch_size]))
            total += alternating_step(model, batch, cfg.lr, lr_item) * len(it)
        seen += len(items)
        last_loss = total / len(items)
    return last_loss, np.unique(np.concatenate(touched)), seen


class PFedRecDevice(EmbeddingDevice):
    """PFedRec device: private score function + personalised item rows; uploads touched rows."""

    model_name = "pfedrec"
    sparse_tables = (ITEM_TABLE,)
    scored_model = "personalised"

    def __init__(self, cfg, fed) -> None:
        require_pfedrec(cfg.train.model)
        super().__init__(cfg, fed)
        self.pcfg = protocol_options(cfg, PFedRecConfig)
        self.item_lr = item_lr(cfg.train.lr, fed.n_items, self.pcfg)
        fresh = build_model("pfedrec", n_users=1, n_items=1, seed=cfg.train.seed,
                            dim=cfg.train.embedding_dim)
        self._initial_score = get_arrays(fresh, self.private)

    def private_init(self, device_id: int) -> Arrays:
        """The same initial score function on every device (copies): the authors' clients
        all start from one copy of the initial model."""
        return {k: v.copy() for k, v in self._initial_score.items()}

    def fit(self, task: DeviceTask) -> DeviceReply:
        torch.set_num_threads(1)
        self.load(task)
        before = task.broadcast[ITEM_TABLE]
        loss, touched, n_seen = train_alternating(self.model, self.fed.device(task.device_id),
                                                  self.train_cfg, self.item_lr, task.rng)
        after = get_arrays(self.model)
        rows = SparseRows(touched, after[ITEM_TABLE][touched] - before[touched])   # [T], [T, D]
        return self.reply(task.device_id, {n: after[n] for n in self.private}, rows, loss, n_seen)

    def reply(self, device_id: int, score_fn: Arrays, rows: SparseRows, loss: float,
              n_seen: int) -> DeviceReply:
        """Upload = touched item rows' change; state = score function + a copy of those rows
        (a wrapper that perturbs the upload in place must not change the device's model)."""
        upload: Arrays = {}
        add_sparse(upload, ITEM_TABLE, rows)
        state = dict(score_fn)
        add_sparse(state, PERSONAL, SparseRows(rows.indices.copy(), rows.values.copy()))
        return DeviceReply(device_id=device_id, upload=upload, state=state,
                           metrics={"loss": loss}, num_examples=n_seen,
                           flops=self.train_flops(n_seen), peak_mem_bytes=self.memory_bytes(n_seen))

    def load_scored_model(self, task: DeviceTask) -> None:
        """Personalised model: the round's global table + own row changes, own score function."""
        torch.set_num_threads(1)
        self.load(task)
        if task.state is not None and f"{PERSONAL}.idx" in task.state:
            rows = get_sparse(task.state, PERSONAL)
            idx, val = torch.from_numpy(rows.indices), torch.from_numpy(rows.values)
            with torch.no_grad():
                self.model.get_parameter(ITEM_TABLE)[idx] += val

    def score_many(self, tasks: list[DeviceTask], items: np.ndarray | None = None) -> np.ndarray:
        """Candidate lists of a cohort in one computation (``pfedrec-vectorised``)."""
        if items is None or not self.pcfg.vectorised:
            return super().score_many(tasks, items)
        states = [t.state or self.private_init(t.device_id) for t in tasks]
        return score_cohort(tasks[0].broadcast[ITEM_TABLE], states, items, PERSONAL)

    def fit_vectorised(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        """Local training of every task's device at once (clients.pfedrec_batched); the same
        replies as ``fit`` of each device."""
        t = self.train_cfg
        epochs = []
        for k in tasks:
            rng, data = rng_copy(k.rng), self.fed.device(k.device_id)
            epochs.append([local_examples(data, self.fed.n_items, t.num_negatives, rng)
                           for _ in range(t.epochs)])
        p0 = [score_vector(k.state or self.private_init(k.device_id)) for k in tasks]
        inp = build_inputs(p0, epochs, t.batch_size)
        emb = tasks[0].broadcast[ITEM_TABLE]
        P, Q, loss = train_cohort(inp, emb, t.lr, self.item_lr)
        dim = emb.shape[1]
        replies = []
        for u, task in enumerate(tasks):
            lo, hi = inp.owner_offsets[u], inp.owner_offsets[u + 1]
            rows = SparseRows(inp.rows[lo:hi], Q[lo:hi] - emb[inp.rows[lo:hi]])   # [T_u], [T_u, D]
            score = {W: P[u, :dim][None, :].copy(), B: P[u, dim:].copy()}
            n_seen = sum(len(items) for items, _ in epochs[u])
            replies.append(self.reply(task.device_id, score, rows, float(loss[u]), n_seen))
        return replies

    def train_flops(self, n_examples: int) -> float:
        """Two forward+backward passes per example over a D-wide row and a (D+1) score function."""
        dim = self.cfg.train.embedding_dim
        return 2 * 3.0 * 2.0 * n_examples * (2 * dim + 1)

    def run_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        """A cohort as one vectorised computation (``pfedrec-vectorised``): fit tasks always,
        evaluation tasks under the sampled protocol; the per-device loop otherwise."""
        if not self.pcfg.vectorised:   # PFedRec's own per-device loop, not the generic
            return DeviceLogic.run_many(self, tasks)   # cohort trainer of EmbeddingDevice
        torch.set_num_threads(1)
        fits = [t for t in tasks if t.kind == FIT]
        evals = [t for t in tasks if t.kind != FIT]
        done = {r.device_id: r for r in self.fit_vectorised(fits)} if fits else {}
        if evals and self.fed.protocol == "sampled":
            done.update((r.device_id, r) for r in self.evaluate_many(evals))
        return [done[t.device_id] if t.device_id in done else self.evaluate(t) for t in tasks]


def require_pfedrec(model: str) -> None:
    if model not in ("", "pfedrec"):
        raise ConfigError(f"pfedrec trains PFedRec's model, not model={model!r}; "
                          "set model=pfedrec or leave it empty")
