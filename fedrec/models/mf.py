"""Matrix factorisation with a BPR or BCE objective.

Koren, Bell, Volinsky, "Matrix Factorization Techniques for Recommender Systems", IEEE
Computer 2009; BPR: Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit
Feedback", UAI 2009. Federated form (FedMF, Chai et al. 2020): the user embedding never
leaves the device, item embeddings (and item biases) are aggregated by the server.

score(u, i) = <p_u, q_i> + b_i
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from fedrec.errors import ConfigError
from fedrec.models.base import Batch, RecModel
from fedrec.models.common import bce_loss, bpr_loss, check_positive, require, seeded

LOSSES = ("bpr", "bce")
# Std of the N(0, s^2) embedding init: small so initial scores are near 0 (He et al. 2017 use 0.01).
INIT_STD = 0.1


class MF(RecModel):
    """Matrix factorisation; user rows private, item rows and biases shared.

    Parameters
    ----------
    n_users : int
        Users (``1`` on a device, whose user is row 0).
    n_items : int
        Items, ids ``0..n_items-1``.
    dim : int
        Embedding size D.
    loss : {"bpr", "bce"}
        ``"bpr"`` needs ``batch.items`` (positives) and ``batch.neg_items`` [B, N];
        ``"bce"`` needs ``batch.items`` and ``batch.labels``.
    item_bias : bool
        Add a shared per-item bias b_i.
    seed : int or None
        Seed of the initialisation (the caller's RNG is left untouched); ``None`` draws from
        the global generator, so ``torch.manual_seed`` also makes it deterministic.
    """

    def __init__(
        self,
        *,
        n_users: int,
        n_items: int,
        dim: int = 32,
        loss: Literal["bpr", "bce"] = "bpr",
        item_bias: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_positive("MF", n_users=n_users, n_items=n_items, dim=dim)
        if loss not in LOSSES:
            raise ConfigError(f"MF: unknown loss {loss!r}; use one of {list(LOSSES)}")
        self.n_users, self.n_items, self.loss_name = n_users, n_items, loss
        with seeded(seed):
            self.user_emb = nn.Embedding(n_users, dim)  # [U, D]  private
            self.item_emb = nn.Embedding(n_items, dim)  # [I, D]  shared
            nn.init.normal_(self.user_emb.weight, std=INIT_STD)
            nn.init.normal_(self.item_emb.weight, std=INIT_STD)
        # [I] shared; zero init needs no RNG, so it does not shift the draws above.
        self.item_bias = nn.Parameter(torch.zeros(n_items)) if item_bias else None

    def _users(self, batch: Batch) -> torch.Tensor:
        users = require(batch, "users", "MF", "set batch.users (row 0 on a device)")
        return self.user_emb(users)  # [B, D]

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, C]`` of ``candidates`` [B, C] for ``batch.users`` [B]."""
        u = self._users(batch)  # [B, D]
        q = self.item_emb(candidates)  # [B, C, D]
        s = torch.bmm(q, u.unsqueeze(-1)).squeeze(-1)  # [B, C]
        return s if self.item_bias is None else s + self.item_bias[candidates]

    def score_all(self, batch: Batch) -> torch.Tensor:
        """Scores ``[B, n_items]`` of every item for ``batch.users`` [B]."""
        s = self._users(batch) @ self.item_emb.weight.T  # [B, I]
        return s if self.item_bias is None else s + self.item_bias

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean BPR loss over (positive, negative) pairs, or mean BCE over rows."""
        items = require(batch, "items", "MF", "set batch.items [B]")
        if self.loss_name == "bce":
            labels = require(batch, "labels", "MF(loss='bce')", "set labels or use loss='bpr'")
            return bce_loss(self.score(batch, items.unsqueeze(1)).squeeze(1), labels)
        neg = require(batch, "neg_items", "MF(loss='bpr')", "sample negatives or use loss='bce'")
        s = self.score(batch, torch.cat([items.unsqueeze(1), neg], dim=1))  # [B, 1 + N]
        return bpr_loss(s[:, 0], s[:, 1:])

    def private_parameter_names(self) -> frozenset[str]:
        """The user table: ``{"user_emb.weight"}``."""
        return frozenset({"user_emb.weight"})
