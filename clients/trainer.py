"""Local training and evaluation of one device's model: pure functions of (model, data, rng).

No Flower, no files. Used by every leave-one-out protocol's device logic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedrec.evaluation import leave_one_out_metrics
from fedrec.federated import DeviceData
from fedrec.models.base import Batch, RecModel

ZERO_USER = torch.zeros(1, dtype=torch.long)
EVAL_USER = Batch(users=ZERO_USER)  # a device scores for its own user, row 0 of its model


@dataclass(frozen=True)
class LocalTrainConfig:
    epochs: int
    lr: float
    batch_size: int
    num_negatives: int


def sample_outside(seen: np.ndarray, need: int, rng: np.random.Generator) -> np.ndarray:
    """``need`` items (with replacement) whose flag in ``seen`` (bool [n_items]) is off.
    int64 [need]."""
    if seen.all():
        raise ValueError(f"device interacted with all {len(seen)} items: no negatives to sample")
    out = np.empty(0, dtype=np.int64)
    while len(out) < need:  # rejection sampling; expected draws ~ need / (1 - density)
        draw = rng.integers(0, len(seen), size=2 * (need - len(out)) + 8)
        out = np.concatenate([out, draw[~seen[draw]]])
    return out[:need]


def local_examples(data: DeviceData, n_items: int, k: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise examples for one epoch: items int64 [P*(1+k)], labels float32 [P*(1+k)].

    Negatives avoid every item the user interacted with, its held-out validation and test
    items included (as He et al. 2017 and the PFedRec authors sample): a device never trains
    its own held-out item as a negative. The device owns those items, so nothing leaks.
    """
    seen = np.zeros(n_items, dtype=bool)                 # [I] items negatives must avoid
    seen[data.train_items] = True
    pos = np.flatnonzero(seen)                           # [P] == np.unique(train_items)
    for held in (data.valid_item, data.test_item):       # held-out items (-1 = none)
        if held >= 0:
            seen[held] = True
    neg = sample_outside(seen, len(pos) * k, rng)        # [P*k]
    order = rng.permutation(len(pos) + len(neg))
    items = np.concatenate([pos, neg])[order]
    return items, (order < len(pos)).astype(np.float32)  # label 1 = one of the P positives


OPTIMIZERS = ("sgd", "adam")


def train_local(model: RecModel, data: DeviceData, cfg: LocalTrainConfig,
                rng: np.random.Generator, lrs: dict[str, float] | None = None,
                optimizer: str = "sgd") -> tuple[float, np.ndarray, int]:
    """Epochs of BCE on the device's examples with plain SGD or Adam (torch defaults:
    betas 0.9/0.999, eps 1e-8; its moments start at zero every round: nothing persists).

    lrs: optional per-parameter-name learning rate (default ``cfg.lr``).
    Returns (mean loss of the last epoch, touched item ids [T] sorted, examples seen).
    """
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        groups.setdefault((lrs or {}).get(name, cfg.lr), []).append(p)
    param_groups = [{"params": ps, "lr": lr} for lr, ps in groups.items()]
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer {optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
    opt = torch.optim.Adam(param_groups) if optimizer == "adam" else torch.optim.SGD(param_groups)
    touched: list[np.ndarray] = []
    seen, last_loss = 0, float("nan")
    for _ in range(cfg.epochs):
        items, labels = local_examples(data, model.n_items, cfg.num_negatives, rng)
        touched.append(items)
        losses = []
        for lo in range(0, len(items), cfg.batch_size):
            it = torch.from_numpy(items[lo:lo + cfg.batch_size])
            batch = Batch(users=ZERO_USER.expand(len(it)), items=it,
                          labels=torch.from_numpy(labels[lo:lo + cfg.batch_size]))
            opt.zero_grad(set_to_none=True)
            loss = model.loss(batch)
            loss.backward()
            opt.step()
            losses.append(loss.item() * len(it))
        seen += len(items)
        last_loss = sum(losses) / len(items)
    return last_loss, np.unique(np.concatenate(touched)), seen


@torch.no_grad()
def score_items(model: RecModel, items: np.ndarray | None = None) -> np.ndarray:
    """A device model's scores (its user is row 0): items int [C], or [S, C] scored as S
    separate requests, -> float32 of the same shape; None -> every item, [n_items]."""
    if items is None:
        return model.score_all(EVAL_USER)[0].numpy()
    lists = np.asarray(items, dtype=np.int64)
    rows = [model.score(EVAL_USER, torch.from_numpy(np.ascontiguousarray(c))[None, :])[0].numpy()
            for c in lists.reshape(-1, lists.shape[-1])]                # S x [C]
    return np.stack(rows).reshape(lists.shape)


def evaluate_local(model: RecModel, data: DeviceData, ks: tuple[int, ...] = (10, 20)
                   ) -> dict[str, float]:
    """HR/NDCG/MRR@k of the validation and test items of one device with this model: the
    leave-one-out protocol of ``fedrec.evaluation.leave_one_out_metrics`` (sampled: the target
    among [target, negatives...]; full: among all items, training items excluded and, for the
    test item, the validation item). Ties count against the target."""
    def scores(items: np.ndarray | None) -> np.ndarray:
        return score_items(model, None if items is None else items[0])[None]

    return leave_one_out_metrics([data], scores, ks)[0]
