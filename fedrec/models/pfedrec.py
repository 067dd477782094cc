"""PFedRec's on-device model: item embeddings plus a private score function, no user embedding.

Zhang et al., "Dual Personalization on Federated Recommendation", IJCAI 2023. The user is
represented only by the score function, which never leaves the device; the item embeddings
are fine-tuned locally, uploaded and aggregated by the server (then personalised again by
local training: the second "personalisation").

score(i) = f_theta(q_i),  f_theta = MLP -> Linear(., 1); trained with BCE (sigmoid of score)
"""

from __future__ import annotations

import torch
from torch import nn

from fedrec.errors import ConfigError
from fedrec.models.base import Batch, RecModel
from fedrec.models.common import bce_loss, check_positive, mlp, require, seeded

# Std of the N(0, s^2) item-embedding init.
INIT_STD = 0.1


class PFedRecModel(RecModel):
    """Item table (shared) and score function (private); the user context is implicit.

    Parameters
    ----------
    n_users : int
        Accepted for the common constructor and ignored: the model *is* one user's.
    n_items : int
        Items, ids ``0..n_items-1``.
    dim : int
        Item embedding size D.
    hidden : tuple of int
        Hidden widths of the score function; ``()`` is the paper's single linear layer.
    seed : int or None
        Seed of the initialisation (the caller's RNG is left untouched).

    Notes
    -----
    Scores do not depend on the batch rows (no user input); ``score_all`` returns the same
    ``[n_items]`` vector for each of the B rows.
    """

    def __init__(
        self,
        *,
        n_users: int = 1,
        n_items: int,
        dim: int = 32,
        hidden: tuple[int, ...] = (),
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_positive("PFedRecModel", n_items=n_items, dim=dim)
        if any(h < 1 for h in hidden):
            raise ConfigError(f"PFedRecModel: hidden={hidden!r} widths must be positive")
        self.n_items = n_items
        with seeded(seed):
            self.item_emb = nn.Embedding(n_items, dim)  # [I, D] shared
            nn.init.normal_(self.item_emb.weight, std=INIT_STD)
            self.score_fn = nn.Sequential(
                mlp((dim, *hidden), nn.ReLU),  # [.., D] -> [.., H_last]
                nn.Linear(hidden[-1] if hidden else dim, 1),  # -> [.., 1]
            )

    def _scores(self, items: torch.Tensor) -> torch.Tensor:
        return self.score_fn(self.item_emb(items)).squeeze(-1)  # items [...] -> [...]

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, C]`` (logits) of ``candidates`` [B, C]."""
        return self._scores(candidates)

    def score_all(self, batch: Batch) -> torch.Tensor:
        """Scores ``[B, n_items]`` (logits); every row is the same vector."""
        s = self.score_fn(self.item_emb.weight).squeeze(-1)  # [I]
        # A real copy per row, not an expand() view: callers mask scores in place.
        return s.unsqueeze(0).repeat(len(batch), 1)  # [B, I]

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean BCE of ``batch.items`` [B] against ``batch.labels`` [B]."""
        items = require(batch, "items", "PFedRecModel", "set batch.items [B]")
        labels = require(batch, "labels", "PFedRecModel", "set batch.labels [B] (1 pos, 0 neg)")
        return bce_loss(self._scores(items), labels)

    def private_parameter_names(self) -> frozenset[str]:
        """Every parameter of the score function (``score_fn.*``)."""
        return frozenset(n for n, _ in self.named_parameters() if n.startswith("score_fn."))
