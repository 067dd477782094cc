"""Deep Interest Network: target attention over the history, then an MLP to a click logit.

Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018. For each
(history item h, target t) the activation unit scores ``a(h, t) = MLP([h, t, h - t, h * t])``;
the user interest is ``sum_l a(h_l, t) h_l`` (no softmax, to keep the intensity of interest,
Sec. 4.3); the logit is ``MLP([interest, t, interest * t])`` (the product term follows the
authors' released code). Activations are PReLU: Dice's batch statistics are ill-defined on the
few-row batches of one device.

All parameters are shared by default (no user table); ``private_prefixes`` keeps chosen ones
on the device.
"""

from __future__ import annotations

import torch
from torch import nn

from fedrec.errors import ConfigError
from fedrec.models.base import Batch, RecModel
from fedrec.models.common import (
    bce_loss,
    check_positive,
    chunk_size,
    embed_history,
    linear_at,
    mlp,
    prefixed_names,
    require,
    score_in_chunks,
    seeded,
)

# Std of the N(0, s^2) item-embedding init.
INIT_STD = 0.1


def attention_first_layer(layer: nn.Linear, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``layer([h, t, h - t, h * t])`` for every (target, history) pair, without the concat.

    With ``W = [W1 W2 W3 W4]`` split by input block, ``W [h; t; h-t; h*t] = (W1 + W3) h +
    (W2 - W3) t + W4 (h * t)``: the h and t terms are computed once per item, not per pair.

    Parameters
    ----------
    layer : nn.Linear
        ``4D -> A``.
    h : FloatTensor [B, L, D]
        History embeddings.
    t : FloatTensor [B|1, C, D]
        Target embeddings.

    Returns
    -------
    FloatTensor [B, C, L, A]
    """
    w1, w2, w3, w4 = layer.weight.chunk(4, dim=1)  # each [A, D]
    hh = h @ (w1 + w3).T  # [B, L, A]
    tt = t @ (w2 - w3).T + layer.bias  # [B|1, C, A]
    pp = (t.unsqueeze(2) * h.unsqueeze(1)) @ w4.T  # [B, C, L, A]
    return pp + hh.unsqueeze(1) + tt.unsqueeze(2)


class DIN(RecModel):
    """DIN; ``batch.history`` [B, L] (PAD-left) is the user, ``batch.items`` the target.

    Parameters
    ----------
    n_users : int
        Accepted for the common constructor and ignored.
    n_items : int
        Items, ids ``0..n_items-1``.
    dim : int
        Item embedding size D.
    attention_hidden : tuple of int
        Hidden widths of the activation unit (paper's code: 80, 40).
    mlp_hidden : tuple of int
        Hidden widths of the output MLP (paper: 200, 80).
    private_prefixes : tuple of str
        Parameter-name prefixes that stay on the device; default none.
    seed : int or None
        Seed of the initialisation (the caller's RNG is left untouched).

    Notes
    -----
    Loss: BCE on ``batch.items`` / ``batch.labels``. An empty history gives a zero interest.
    ``score_all`` runs in item chunks (the attention is per (row, item, position)).
    """

    def __init__(
        self,
        *,
        n_users: int = 1,
        n_items: int,
        dim: int = 32,
        attention_hidden: tuple[int, ...] = (80, 40),
        mlp_hidden: tuple[int, ...] = (200, 80),
        private_prefixes: tuple[str, ...] = (),
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_positive("DIN", n_items=n_items, dim=dim)
        if not attention_hidden or min((*attention_hidden, *mlp_hidden, 1)) < 1:
            raise ConfigError(
                f"DIN: attention_hidden={attention_hidden!r} needs >= 1 width and all widths "
                f"(also mlp_hidden={mlp_hidden!r}) must be positive"
            )
        self.n_items = n_items
        with seeded(seed):
            self.item_emb = nn.Embedding(n_items, dim)  # [I, D] shared
            nn.init.normal_(self.item_emb.weight, std=INIT_STD)
            self.att = mlp((4 * dim, *attention_hidden), nn.PReLU)  # [.., 4D] -> [.., A]
            self.att_out = nn.Linear(attention_hidden[-1], 1)  # -> weight a(h, t)
            self.head = mlp((3 * dim, *mlp_hidden), nn.PReLU)  # [.., 3D] -> [.., M]
            self.head_out = nn.Linear(mlp_hidden[-1] if mlp_hidden else 3 * dim, 1)  # logit
        self._private = prefixed_names(self, private_prefixes, "DIN")

    def _history(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        history = require(batch, "history", "DIN", "set batch.history [B, L] (PAD-left)")
        return embed_history(self.item_emb, history)  # [B, L, D], [B, L]

    def _logits(self, h: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] from history ``h`` [B, L, D], ``mask`` [B, L], targets ``t`` [B|1, C, D]."""
        z = self.att[1:](attention_first_layer(linear_at(self.att, 0), h, t))  # [B, C, L, A]
        a = self.att_out(z).squeeze(-1) * mask.unsqueeze(1)  # [B, C, L], 0 at PAD
        interest = a @ h  # [B, C, D] = sum_l a_l h_l
        t = t.expand_as(interest)
        x = torch.cat([interest, t, interest * t], dim=-1)  # [B, C, 3D]
        return self.head_out(self.head(x)).squeeze(-1)  # [B, C]

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` of ``candidates`` [B, C] given each row's history."""
        h, mask = self._history(batch)
        return self._logits(h, mask, self.item_emb(candidates))

    def score_all(self, batch: Batch) -> torch.Tensor:
        """Logits ``[B, n_items]``, computed in item chunks of bounded memory."""
        h, mask = self._history(batch)
        B, L, D = h.shape
        width = max(L, 1) * max(linear_at(self.att, 0).out_features, D)
        n = chunk_size(B, width)
        return score_in_chunks(
            lambda ids: self._logits(h, mask, self.item_emb(ids)[None]), self.n_items, n, h.device
        )

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean BCE of ``batch.items`` [B] against ``batch.labels`` [B]."""
        items = require(batch, "items", "DIN", "set batch.items [B]")
        labels = require(batch, "labels", "DIN", "set batch.labels [B] (1 pos, 0 neg)")
        return bce_loss(self.score(batch, items.unsqueeze(1)).squeeze(1), labels)

    def private_parameter_names(self) -> frozenset[str]:
        """None by default; the names matching ``private_prefixes`` otherwise."""
        return self._private
