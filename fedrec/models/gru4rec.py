"""GRU4Rec in the C3DRec form: item embedding -> (sparse layer) -> GRU -> user embedding -> scores.

Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks", ICLR 2016;
C3DRec (device-cloud collaborative recommendation, Sec. 3.3-3.4): the last GRU state is the
*user embedding*; a feed-forward layer maps it to a score per item. Its weight rows are the
*item embeddings* used by pull mode (device downloads items) and push mode (device uploads the
user embedding): ``score_all(b) == user_embedding(b) @ item_embeddings().T (+ item_bias())``.

Sparse layer (C3DRec Eq. 3): entries with ``|x| <= threshold`` are set to zero and
``lasso * sum|x|`` is added to the loss, so the embedding that travels is sparse. It acts on
the input item embeddings (``sparse="item"``, pull mode, Fig. 3a) or on the user embedding
(``sparse="user"``, push mode, Fig. 3b).

All parameters are shared by default: C3DRec fine-tunes the whole global model on the device
and protects privacy by what it uploads; ``private_prefixes`` keeps chosen ones on the device.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fedrec.errors import ConfigError
from fedrec.models.base import PAD, Batch, RecModel
from fedrec.models.common import (
    check_positive,
    embed_history,
    prefixed_names,
    require,
    sampled_softmax_loss,
    seeded,
)

SPARSE_MODES = ("none", "item", "user")


def hard_threshold(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """C3DRec's sparse layer: keep entries with ``|x| > threshold``, zero the rest (same shape)."""
    return x * (x.abs() > threshold) if threshold > 0 else x


def right_pad(history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a left-padded history [B, L] into a right-padded one, plus lengths [B].

    Row with n items: ``out[j] = history[L - n + j]``; the index wraps modulo L, so positions
    ``j >= n`` pick up the row's PADs. A GRU over the result reaches the last item at step n-1
    without having read any PAD (running it over left padding would change the state).
    """
    length = (history != PAD).sum(dim=1)  # [B]
    L = history.shape[1]
    idx = (torch.arange(L, device=history.device) + (L - length).unsqueeze(1)) % L  # [B, L]
    return history.gather(1, idx), length


class GRU4Rec(RecModel):
    """Next-item model; ``batch.history`` [B, L] is the prefix, ``batch.items`` [B] the next item.

    Parameters
    ----------
    n_users : int
        Accepted for the common constructor and ignored (the user is their history).
    n_items : int
        Items, ids ``0..n_items-1``.
    embedding_dim : int
        Input item embedding size E.
    hidden_dim : int
        GRU state size H = user embedding size = item output embedding size.
    num_layers : int
        Stacked GRU layers (C3DRec uses one with H = 100).
    sparse : {"none", "item", "user"}
        Where the sparse layer acts (see the module docstring).
    threshold : float
        Sparse layer threshold gamma (0 keeps every entry).
    lasso : float
        Weight of the L1 penalty on the sparse layer's output (mean over rows of the row sum).
    output_bias : bool
        Add a per-item bias to the output layer; off by default so that scores are exactly the
        dot product of user and item embeddings.
    private_prefixes : tuple of str
        Parameter-name prefixes that stay on the device (e.g. ``("gru.",)``); default none.
    seed : int or None
        Seed of the initialisation (the caller's RNG is left untouched).

    Notes
    -----
    Loss: cross-entropy of the next item over all items, or over ``[items, neg_items]`` (sampled
    softmax, positive in column 0) when ``batch.neg_items`` is given. An empty history gives a
    zero user embedding (scores = output bias).
    """

    def __init__(
        self,
        *,
        n_users: int = 1,
        n_items: int,
        embedding_dim: int = 64,
        hidden_dim: int = 100,
        num_layers: int = 1,
        sparse: Literal["none", "item", "user"] = "none",
        threshold: float = 0.0,
        lasso: float = 0.0,
        output_bias: bool = False,
        private_prefixes: tuple[str, ...] = (),
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_positive(
            "GRU4Rec",
            n_items=n_items,
            embedding_dim=embedding_dim,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
        )
        if sparse not in SPARSE_MODES:
            raise ConfigError(
                f"GRU4Rec: unknown sparse={sparse!r}; use one of {list(SPARSE_MODES)}"
            )
        if threshold < 0 or lasso < 0:
            raise ConfigError(f"GRU4Rec: threshold={threshold} and lasso={lasso} must be >= 0")
        self.n_items, self.sparse, self.threshold, self.lasso = n_items, sparse, threshold, lasso
        with seeded(seed):
            self.item_emb = nn.Embedding(n_items, embedding_dim)  # [I, E]
            self.gru = nn.GRU(embedding_dim, hidden_dim, num_layers, batch_first=True)
            self.out = nn.Linear(hidden_dim, n_items, bias=output_bias)  # weight [I, H]
        self._private = prefixed_names(self, private_prefixes, "GRU4Rec")

    def _user_state(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """User embedding [B, H] and the (unweighted) L1 of the sparse layer's output, scalar."""
        history = require(batch, "history", "GRU4Rec", "set batch.history [B, L] (PAD-left)")
        l1 = torch.zeros((), device=history.device)
        if history.shape[1] == 0:  # no history column at all: every row is empty
            return self.item_emb.weight.new_zeros(history.shape[0], self.gru.hidden_size), l1
        ids, length = right_pad(history)  # [B, L], [B]
        x, _ = embed_history(self.item_emb, ids)  # [B, L, E], zero at PAD
        if self.sparse == "item":
            x = hard_threshold(x, self.threshold)
            l1 = x.abs().sum() / x.shape[0]
        states, _ = self.gru(x)  # [B, L, H]
        last = (length - 1).clamp(min=0)  # [B]
        u = states[torch.arange(len(last), device=last.device), last]  # [B, H]
        u = u * (length > 0).unsqueeze(1)  # empty history -> zero embedding
        if self.sparse == "user":
            u = hard_threshold(u, self.threshold)
            l1 = u.abs().sum() / u.shape[0]
        return u, l1

    def user_embedding(self, batch: Batch) -> torch.Tensor:
        """User embedding ``[B, H]``: last GRU state after the history (push mode uploads it)."""
        return self._user_state(batch)[0]

    def item_embeddings(self) -> torch.Tensor:
        """Output item embeddings ``[n_items, H]`` (pull mode downloads rows of it)."""
        return self.out.weight

    def item_bias(self) -> torch.Tensor | None:
        """Output bias ``[n_items]``, or None when ``output_bias=False``."""
        return self.out.bias

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, C]`` (logits) of ``candidates`` [B, C] after each row's history."""
        return self._score(self.user_embedding(batch), candidates)

    def _score(self, u: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        s = torch.bmm(self.out.weight[candidates], u.unsqueeze(-1)).squeeze(-1)  # [B, C]
        return s if self.out.bias is None else s + self.out.bias[candidates]

    def score_all(self, batch: Batch) -> torch.Tensor:
        """Scores ``[B, n_items]`` (logits) of every item after each row's history."""
        return self.out(self.user_embedding(batch))

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean next-item cross-entropy (full or sampled) plus ``lasso`` times the L1 term."""
        items = require(batch, "items", "GRU4Rec", "set batch.items [B] (the next item)")
        u, l1 = self._user_state(batch)
        if batch.neg_items is None:
            ce = F.cross_entropy(self.out(u), items)
        else:
            ce = sampled_softmax_loss(
                self._score(u, torch.cat([items.unsqueeze(1), batch.neg_items], dim=1))
            )
        return ce + self.lasso * l1 if self.sparse != "none" else ce

    def private_parameter_names(self) -> frozenset[str]:
        """None by default; the names matching ``private_prefixes`` otherwise."""
        return self._private
