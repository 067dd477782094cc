"""SASRec: causal self-attention over the item history; the last state scores items.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018. The history's item
embeddings (scaled by sqrt(D), as in the authors' code) plus learned positional embeddings go
through ``blocks`` pre-norm blocks (causal multi-head self-attention, residual from the
normalised query as in the released code, then a point-wise two-layer FFN with a residual),
then a final layer norm. The state after the last real history item is the sequence
representation ``s``; items are scored with the shared input table: ``score(i) = <s, q_i>``.

Histories may be padded (PAD = -1) anywhere: base.py's left padding and the sample view's
end padding give the same result. Each row's real items are first compacted to the front in
their order (oldest first, a right-padded layout), so the causal mask alone keeps every real
position from seeing a PAD and no row needs a key-padding mask. Positions count from the
most recent item (0 = last item, as in the paper's right-aligned window, where the last item
always sits at the same position); only the last ``max_len`` real items are kept. An empty
history gives ``s = LayerNorm(0)`` = the final layer norm's bias (the paper's code also puts
masked, zero states through the last layer norm): a learned context-free representation.

``loss`` is pointwise BCE on ``batch.items`` / ``batch.labels`` with one representation per
row (the RecModel contract: the sample view has one row per (prefix, candidate)).
``sequence_logits`` serves the paper's own objective (Sec. III-E): one causal pass over a
training sequence scores, at every slot, candidates for the next item. Its states are the
paper's training states: as in the paper's left-padded input, positions count back from the
row's last real item, so only the last real slot's state equals ``user_embedding`` of that
prefix (an earlier slot j sees its own item at position ``n - 1 - j``, not 0). All parameters
are shared: there is no user table.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from fedrec.errors import ConfigError
from fedrec.models.base import PAD, Batch, RecModel
from fedrec.models.common import bce_loss, check_positive, embed_history, require, seeded

# Std of the N(0, s^2) item and position embedding init.
INIT_STD = 0.1


def compact_history(history: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real items to the front (order kept) and keep the last ``max_len``.

    Parameters
    ----------
    history : LongTensor [B, L]
        Item ids with PAD = -1 anywhere (left- or end-padded).
    max_len : int
        Most recent real items kept per row.

    Returns
    -------
    ids : LongTensor [B, W]
        ``W = max(1, min(max_len, longest row))``; row b holds its last ``min(n_b, max_len)``
        items oldest first, then PAD.
    length : LongTensor [B]
        Real items kept per row.
    """
    if history.shape[1] == 0:  # no history column at all: one PAD slot per row
        history = history.new_full((history.shape[0], 1), PAD)
    real = history != PAD  # [B, L]
    order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)  # reals first, in order
    front = history.gather(1, order)  # [B, L]
    n = real.sum(dim=1)  # [B]
    width = max(1, min(max_len, int(n.max()) if n.numel() else 0))
    start = (n - width).clamp(min=0)  # [B] drop the oldest beyond the window
    idx = start.unsqueeze(1) + torch.arange(width, device=history.device)  # [B, W]
    length = n.clamp(max=width)  # [B]
    ok = torch.arange(width, device=history.device) < length.unsqueeze(1)  # [B, W]
    ids = torch.where(ok, front.gather(1, idx), PAD)  # idx < L: width <= longest row <= L
    return ids, length


def recency_positions(length: torch.Tensor, width: int) -> torch.Tensor:
    """Position index of each slot counted back from the row's last real item. [B] -> [B, W]

    Slot j of a row with n items gets ``n - 1 - j`` (0 = most recent); PAD slots get 0.
    """
    j = torch.arange(width, device=length.device)
    return (length.unsqueeze(1) - 1 - j).clamp(min=0)


class Block(nn.Module):
    """One SASRec block: ``x = LN1(x); x = x + MHA(x); x = x + FFN(LN2(x))`` (paper's code)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln_att = nn.LayerNorm(dim, eps=1e-8)
        self.att = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ln_ffn = nn.LayerNorm(dim, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim),
            nn.Dropout(dropout),
        )

    def forward(
        self, x: torch.Tensor, causal: torch.Tensor, at: torch.Tensor | None = None
    ) -> torch.Tensor:
        """States after the block.

        ``x`` [B, W, D], ``causal`` BoolTensor [W, W] (True = may not attend) -> [B, W, D];
        with ``at`` LongTensor [B], only the state at slot ``at[b]`` of each row -> [B, 1, D]
        (the same values, without the queries, FFN and norms of the other slots).
        """
        if at is None:
            q = self.ln_att(x)  # [B, W, D]
            a, _ = self.att(q, x, x, attn_mask=causal, need_weights=False)  # [B, W, D]
        else:
            rows = torch.arange(x.shape[0], device=x.device)
            q = self.ln_att(x[rows, at]).unsqueeze(1)  # [B, 1, D]
            later = causal[at]  # [B, W]: keys after slot at[b]
            a, _ = self.att(q, x, x, key_padding_mask=later, need_weights=False)  # [B, 1, D]
        h = self.ln_ffn(q + a)
        return h + self.ffn(h)


class SASRec(RecModel):
    """SASRec; ``batch.history`` [B, L] (PAD anywhere) is the user, ``batch.items`` the target.

    Parameters
    ----------
    n_users : int
        Accepted for the common constructor and ignored (the user is their history).
    n_items : int
        Items, ids ``0..n_items-1``.
    dim : int
        Embedding and hidden size D (paper: 50).
    max_len : int
        Positional embeddings = most recent history items used (paper: 200 on ML-1M).
    blocks : int
        Self-attention blocks (paper: 2).
    heads : int
        Attention heads; must divide ``dim`` (paper: 1).
    dropout : float
        Dropout on the embeddings, attention weights and FFN (paper: 0.2 on ML-1M).
    seed : int or None
        Seed of the initialisation (the caller's RNG is left untouched).

    Notes
    -----
    Loss: BCE on ``batch.items`` / ``batch.labels``. ``score_all`` is one ``[B, D] @ [D, I]``
    product: unlike DIN, no intermediate is larger than the ``[B, I]`` output, so it needs no
    item chunks.
    """

    def __init__(
        self,
        *,
        n_users: int = 1,
        n_items: int,
        dim: int = 50,
        max_len: int = 200,
        blocks: int = 2,
        heads: int = 1,
        dropout: float = 0.2,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_positive("SASRec", n_items=n_items, dim=dim, max_len=max_len, heads=heads)
        if blocks < 0 or dim % heads or not 0.0 <= dropout < 1.0:
            raise ConfigError(
                f"SASRec: need blocks >= 0 (got {blocks}), heads dividing dim (got {heads} "
                f"and {dim}) and dropout in [0, 1) (got {dropout})"
            )
        self.n_items, self.max_len = n_items, max_len
        with seeded(seed):
            self.item_emb = nn.Embedding(n_items, dim)  # [I, D] input and output table
            self.pos_emb = nn.Embedding(max_len, dim)  # [max_len, D], 0 = most recent
            nn.init.normal_(self.item_emb.weight, std=INIT_STD)
            nn.init.normal_(self.pos_emb.weight, std=INIT_STD)
            self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(blocks))
        self.emb_dropout = nn.Dropout(dropout)
        self.ln_out = nn.LayerNorm(dim, eps=1e-8)

    def _embed(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Block input [B, W, D] (zero at PAD slots), keep mask [B, W, 1], lengths [B]."""
        ids, length = compact_history(history, self.max_len)  # [B, W], [B]
        x, mask = embed_history(self.item_emb, ids)  # [B, W, D], [B, W]
        keep = mask.unsqueeze(-1)  # [B, W, 1]
        pos = self.pos_emb(recency_positions(length, ids.shape[1]))  # [B, W, D]
        return self.emb_dropout(x * math.sqrt(x.shape[-1]) + pos) * keep, keep, length

    @staticmethod
    def _causal(width: int, device: torch.device) -> torch.Tensor:
        """BoolTensor [W, W], True above the diagonal: slot i may not attend to j > i."""
        return torch.triu(torch.ones(width, width, dtype=torch.bool, device=device), diagonal=1)

    def states(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output states of the compacted history and the kept lengths.

        history LongTensor [B, L] (PAD anywhere) -> (FloatTensor [B, W, D], LongTensor [B]);
        state j depends on the compacted items 0..j only (and on the row's length, through the
        recency positions). PAD slots are zero before the final layer norm.
        """
        x, keep, length = self._embed(history)
        causal = self._causal(x.shape[1], x.device)
        for block in self.blocks:
            x = block(x, causal) * keep
        return self.ln_out(x), length

    def sequence_logits(self, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Logits of ``targets`` after every slot of ``history``, from one causal pass.

        Parameters
        ----------
        history : LongTensor [B, W]
            Each row's real items oldest first, then PAD (end padding only); at most
            ``max_len`` real items a row.
        targets : LongTensor [B, W] or [B, W, C]
            Candidates scored with the state after history slot j (PAD allowed).

        Returns
        -------
        FloatTensor, the shape of ``targets``: ``<states(history)[b, j], q_t>``; 0 where the
        history slot or the target is PAD. Slot j depends on history slots 0..j only.
        """
        one = targets.dim() == 2
        cand = targets.unsqueeze(-1) if one else targets  # [B, W, C]
        B, W = history.shape
        real = history != PAD  # [B, W]
        if cand.dim() != 3 or cand.shape[:2] != history.shape:
            raise ConfigError(f"SASRec.sequence_logits: targets {tuple(targets.shape)} must be "
                              f"[B, W] or [B, W, C] with [B, W] = {tuple(history.shape)}")
        longest = int(real.sum(dim=1).max()) if B else 0
        if longest > self.max_len or bool((real[:, 1:] & ~real[:, :-1]).any()):
            raise ConfigError(f"SASRec.sequence_logits: history needs end padding only and at "
                              f"most max_len = {self.max_len} real items a row (got {longest})")
        if W == 0:
            return torch.zeros(targets.shape, device=self.item_emb.weight.device)
        h, _ = self.states(history)  # [B, w, D]: w = longest row (>= 1), ids as given
        w = min(h.shape[1], W)
        c = cand[:, :w]  # [B, w, C]
        logits = (self.item_emb(c.clamp(min=0)) * h[:, :w].unsqueeze(2)).sum(-1)  # [B, w, C]
        keep = real[:, :w].unsqueeze(-1) & (c != PAD)
        out = F.pad(logits.masked_fill(~keep, 0.0), (0, 0, 0, W - w))  # [B, W, C]
        return out.squeeze(-1) if one else out

    def user_embedding(self, batch: Batch) -> torch.Tensor:
        """Sequence representation ``[B, D]``: the state after each row's last real item.

        Equal to ``states(history)`` at slot ``length - 1``; the last block computes that slot
        only. An empty row reads slot 0, a zero state, so it gets ``ln_out``'s bias.
        """
        history = require(batch, "history", "SASRec", "set batch.history [B, L] (PAD = -1)")
        x, keep, length = self._embed(history)  # [B, W, D], [B, W, 1], [B]
        rows = torch.arange(x.shape[0], device=x.device)
        last = (length - 1).clamp(min=0)  # [B]
        if len(self.blocks) == 0:
            return self.ln_out(x[rows, last])
        causal = self._causal(x.shape[1], x.device)
        for block in self.blocks[:-1]:
            x = block(x, causal) * keep
        h = self.blocks[-1](x, causal, last).squeeze(1) * keep[rows, last]  # [B, D]
        return self.ln_out(h)

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` of ``candidates`` [B, C] after each row's history."""
        u = self.user_embedding(batch)  # [B, D]
        return torch.bmm(self.item_emb(candidates), u.unsqueeze(-1)).squeeze(-1)  # [B, C]

    def score_all(self, batch: Batch) -> torch.Tensor:
        """Logits ``[B, n_items]`` of every item after each row's history."""
        return self.user_embedding(batch) @ self.item_emb.weight.T

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean BCE of ``batch.items`` [B] against ``batch.labels`` [B]."""
        items = require(batch, "items", "SASRec", "set batch.items [B]")
        labels = require(batch, "labels", "SASRec", "set batch.labels [B] (1 pos, 0 neg)")
        return bce_loss(self.score(batch, items.unsqueeze(1)).squeeze(1), labels)

    def private_parameter_names(self) -> frozenset[str]:
        """None: every parameter is shared (there is no user table)."""
        return frozenset()
