"""Tiny hand-made batches shared by the model tests (not a test module)."""

from __future__ import annotations

import torch

from fedrec.models import build_model
from fedrec.models.base import PAD, Batch, RecModel

N_USERS, N_ITEMS = 4, 9

# Per model: constructor kwargs small enough for sub-second overfitting.
KWARGS: dict[str, dict] = {
    "mf": {"dim": 8},
    "mf-bce": {"dim": 8, "loss": "bce"},
    "ncf": {"gmf_dim": 8, "mlp_layers": (16, 8)},
    "pfedrec": {"dim": 8, "hidden": (8,)},
    "gru4rec": {"embedding_dim": 8, "hidden_dim": 16, "output_bias": True},
    "gru4rec-sampled": {"embedding_dim": 8, "hidden_dim": 16, "output_bias": True},
    "din": {"dim": 8, "attention_hidden": (8,), "mlp_hidden": (16,)},
    "sasrec": {"dim": 8, "max_len": 4, "blocks": 1, "dropout": 0.0},  # no dropout: exact checks
}
NAMES = list(KWARGS)


def make(case: str, seed: int | None = 0) -> RecModel:
    """Model of a case (registry name = part before '-')."""
    return build_model(
        case.split("-")[0], n_users=N_USERS, n_items=N_ITEMS, seed=seed, **KWARGS[case]
    )


def batch(case: str) -> Batch:
    """A small batch with every field a case needs; rows disagree so a fit must memorise."""
    users = torch.tensor([0, 1, 2, 3, 0, 1])
    items = torch.tensor([1, 2, 3, 4, 5, 6])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    history = torch.tensor(
        [[PAD, 0, 2], [PAD, PAD, PAD], [7, 8, 1], [PAD, 3, 5], [PAD, PAD, 4], [2, 2, 0]]
    )
    neg = torch.tensor([[0, 7], [8, 3], [1, 2], [5, 0], [6, 8], [4, 7]])
    if case == "pfedrec":  # one device; an item must not be both positive and negative
        return Batch(items=torch.tensor([1, 2, 3, 4, 5, 6]), labels=labels)
    if case == "gru4rec":  # full softmax over items
        return Batch(items=items, history=history)
    return Batch(users=users, items=items, labels=labels, neg_items=neg, history=history)


CANDIDATES = torch.tensor([[0, 8, 3], [1, 1, 2], [4, 5, 6], [8, 7, 0], [2, 3, 4], [5, 0, 1]])
