"""Exposure of target items in a device's own top-K list (ER@K of item-promotion attacks).

Evaluated on the device, like every metric of a model whose user part is private: the
device scores all items, masks its own training items, and reports for each K the share
of the target items (among those it never trained on) inside its top-K. The cloud's
device average equals the papers' ER@K (mean over targets of the share of users exposed,
``fedrec.metrics.exposure_ratio_at_k``) whenever every user is eligible for every target,
the usual case for unpopular targets; ties count against the target.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from clients.device import DeviceTask
from fedrec.models.base import Batch

ITEM, BIAS = "item_emb.weight", "item_bias"


def all_item_scores(logic: Any, tasks: list[DeviceTask]) -> np.ndarray:
    """Scores of every item for each task's device: float [U, n_items].

    FedMF devices (``user_vector`` + MF tables in the broadcast) score the cohort in one
    matrix product; any other ``EmbeddingDevice`` loads its model and calls ``score_all``.
    """
    b = tasks[0].broadcast
    if hasattr(logic, "user_vector") and ITEM in b and BIAS in b:
        p = np.stack([logic.user_vector(t) for t in tasks])  # [U, D]
        return p @ b[ITEM].T + b[BIAS][None, :]  # [U, I]
    out = []
    with torch.no_grad():
        for t in tasks:
            logic.load(t)
            out.append(logic.model.score_all(Batch(users=torch.zeros(1, dtype=torch.long)))[0].numpy())
    return np.stack(out)


def target_exposure(scores: np.ndarray, trained: list[np.ndarray], targets: np.ndarray,
                    ks: tuple[int, ...] = (5, 10)) -> list[dict[str, float]]:
    """Per device {"er@k": share of its eligible targets ranked < k}; {} if none eligible.

    scores [U, I]; trained: each device's training items (masked, and not eligible).
    rank of t = #items scoring >= s_t other than t (pessimistic ties).
    """
    s = scores.astype(np.float64).copy()
    out: list[dict[str, float]] = []
    for u, items in enumerate(trained):
        s[u, items] = -np.inf
        ok = targets[~np.isin(targets, items)]  # [T_u] eligible targets
        if len(ok) == 0:
            out.append({})
            continue
        rank = (s[u][None, :] >= s[u, ok][:, None]).sum(axis=1) - 1  # [T_u]
        out.append({f"er@{k}": float(np.mean(rank < k)) for k in ks})
    return out
