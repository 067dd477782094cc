"""DIN with side features, profile features and DCCL's generated model patches.

The backbone f (Yao et al., "Device-Cloud Collaborative Learning for Recommendation", KDD
2021, Sec. 4; docs/dccl.md) is DIN (Zhou et al., KDD 2018) over the sample view: an item is
its id embedding concatenated with its side embedding (category, mean of its genres); DIN
target attention pools the history into an interest vector; ``[interest, target,
interest * target, profile]`` goes through three fully connected junctions (widths
``hidden``, default 32, 16, 32) to a click logit.

Model patches (Eq. 1): after junction l, ``z_l <- z_l + g * h_l(z_l)`` with a residual
bottleneck adapter ``h(z) = W_up relu(W_down z + b_down) + b_up`` (d -> d/2 -> d, Houlsby et
al. 2019) and a gate g that switches every patch off (the device model is then exactly f).
Parameter generation (Eq. 2): the flattened parameters of patch l are ``Theta_l @ m`` with
one metapatch ``m`` (``Batch.meta``, [B, K]) per row, shared by all junctions; Theta_l
[K_l, K] is the cloud-learned basis. Per-row metapatches let one batched pass run many
devices' models ("fed like features", Sec. 3.2). ``MetaEncoder`` is Eq. 6's
``U(m, u) = W1 tanh(W2 m + W3 u)`` over the one-hot profile u.

Parameter groups: ``basis_names()`` (Theta_l and the encoder, learned in MoMoDistill step 2)
and ``backbone_names()`` (f, every other parameter). Nothing is private: the metapatch is an
input, held by the device (clients/dccl_device.py).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedrec.errors import ConfigError
from fedrec.models.base import PAD, Batch, RecModel
from fedrec.models.common import (
    bce_loss,
    check_positive,
    linear_at,
    mlp,
    require,
    score_in_chunks,
    seeded,
)
from fedrec.models.din import INIT_STD, attention_first_layer

#: std of the N(0, s^2) initialisation of the bases Theta_l (docs/dccl.md, decision 10)
BASIS_STD = 0.01
BASIS_PREFIXES = ("basis.", "encoder.")
# (candidate, history position) pairs per attention pass of ``frozen_features``: the
# [rows, C, L, A] activations then stay in the CPU's cache. 256 events x 101 candidates x
# 50 positions in one pass took 6.2 ms per event on this machine, 3 events per pass 1.4 ms.
ATTENTION_PAIRS = 16384


def patch_size(width: int) -> int:
    """K_l: parameters of a d -> d/2 -> d adapter (W_down, b_down, W_up, b_up)."""
    r = max(width // 2, 1)
    return 2 * width * r + r + width


def apply_patch(z: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """The adapter output ``h(z)`` with per-row parameters.

    z: [B, C, d] junction outputs; flat: [B, K_l] each row's adapter parameters, laid out
    W_down [r, d], b_down [r], W_up [d, r], b_up [d]. -> [B, C, d]
    """
    B, _, d = z.shape
    r = max(d // 2, 1)
    w_down, b_down, w_up, b_up = flat.split([r * d, r, d * r, d], dim=1)
    h = torch.relu(torch.einsum("bcd,brd->bcr", z, w_down.view(B, r, d)) + b_down[:, None])
    return torch.einsum("bcr,bdr->bcd", h, w_up.view(B, d, r)) + b_up[:, None]


class MetaEncoder(nn.Module):
    """Eq. 6: ``U(m, u) = W1 tanh(W2 m + W3 u)``, no biases; u is the one-hot profile."""

    def __init__(self, meta_dim: int, profile_width: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(meta_dim, meta_dim, bias=False)
        self.w2 = nn.Linear(meta_dim, meta_dim, bias=False)
        self.w3 = nn.Linear(profile_width, meta_dim, bias=False) if profile_width else None

    def forward(self, meta: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        """meta [B, K], onehot [B, d_u] (or None without profiles) -> [B, K]."""
        pre = self.w2(meta)
        if self.w3 is not None and onehot is not None:
            pre = pre + self.w3(onehot)
        return self.w1(torch.tanh(pre))


class PatchedDIN(RecModel):
    """DCCL's backbone f with generated patches; see the module docstring.

    Parameters
    ----------
    n_users : int
        Accepted for the common constructor and ignored (no user table).
    n_items : int
        Items, ids ``0..n_items-1``.
    dim : int
        Item id embedding size.
    side_dim : int
        Size of the category and genre embeddings (summed into one side vector).
    categories : int array [n_items] or None
        Category code per item (-1 unknown); None or all -1: no category feature.
    genres : int array [n_items, G] or None
        Genre codes per item, -1 padded; mean-pooled.
    profile_sizes : tuple of int
        Number of codes of each profile column (``Profiles.sizes``); () without profiles.
    profile_dim : int
        Embedding size of each profile column.
    attention_hidden : tuple of int
        Hidden widths of DIN's activation unit.
    hidden : tuple of int
        Widths of the three junctions (FC1, FC2, FC3), each followed by PReLU and its patch.
    meta_dim : int
        K, the metapatch size.
    seed : int or None
        Seed of the initialisation.
    """

    def __init__(
        self,
        *,
        n_users: int = 1,
        n_items: int,
        dim: int = 8,
        side_dim: int = 8,
        categories: np.ndarray | None = None,
        genres: np.ndarray | None = None,
        profile_sizes: tuple[int, ...] = (),
        profile_dim: int = 4,
        attention_hidden: tuple[int, ...] = (32, 16),
        hidden: tuple[int, ...] = (32, 16, 32),
        meta_dim: int = 32,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_positive("PatchedDIN", n_items=n_items, dim=dim, side_dim=side_dim,
                       profile_dim=profile_dim, meta_dim=meta_dim)
        if not hidden or not attention_hidden or min(*hidden, *attention_hidden) < 1:
            raise ConfigError(f"PatchedDIN: hidden={hidden!r} and attention_hidden="
                              f"{attention_hidden!r} need positive widths")
        self.n_items, self.meta_dim, self.hidden = n_items, meta_dim, tuple(hidden)
        cat = np.full(n_items, -1) if categories is None else np.asarray(categories)
        gen = np.full((n_items, 0), -1) if genres is None else np.asarray(genres)
        self.n_categories = int(cat.max()) + 1 if cat.size else 0
        self.n_genres = int(gen.max()) + 1 if gen.size else 0
        self.item_category: torch.Tensor
        self.item_genres: torch.Tensor
        self.register_buffer("item_category", torch.as_tensor(cat, dtype=torch.long))  # [I]
        self.register_buffer("item_genres", torch.as_tensor(gen, dtype=torch.long))    # [I, G]
        self.profile_sizes = tuple(int(s) for s in profile_sizes)
        side = side_dim if (self.n_categories or self.n_genres) else 0
        self.item_width = dim + side                                          # E
        in_width = 3 * self.item_width + profile_dim * len(self.profile_sizes)
        self.in_width = in_width                                              # FC1 input
        with seeded(seed):
            self.item_emb = nn.Embedding(n_items, dim)
            nn.init.normal_(self.item_emb.weight, std=INIT_STD)
            # +1 row each: the code -1 (unknown) maps to the last row
            self.cat_emb = nn.Embedding(self.n_categories + 1, side) if self.n_categories else None
            self.genre_emb = nn.Embedding(self.n_genres + 1, side) if self.n_genres else None
            self.profile_emb = nn.ModuleList(nn.Embedding(s + 1, profile_dim)
                                             for s in self.profile_sizes)
            self.att = mlp((4 * self.item_width, *attention_hidden), nn.PReLU)
            self.att_out = nn.Linear(attention_hidden[-1], 1)
            self.junction = mlp((in_width, *self.hidden), nn.PReLU)           # FC1, FC2, FC3
            self.out = nn.Linear(self.hidden[-1], 1)
            self.basis = nn.ParameterList(
                nn.Parameter(torch.randn(patch_size(w), meta_dim) * BASIS_STD) for w in self.hidden)
            self.encoder = MetaEncoder(meta_dim, sum(self.profile_sizes))
        #: the manual gate of Eq. 1: False runs f alone whatever ``Batch.meta`` holds
        self.gate = True
        #: which junctions carry a patch (Table 4 keeps one at a time)
        self.junctions: tuple[bool, ...] = (True,) * len(self.hidden)

    # ------------------------------------------------------------------ parameter groups
    def basis_names(self) -> list[str]:
        """Theta_l and the encoder (MoMoDistill step 2)."""
        return [n for n, _ in self.named_parameters() if n.startswith(BASIS_PREFIXES)]

    def backbone_names(self) -> list[str]:
        """Every parameter of f (MoMoDistill step 1, pre-training)."""
        return [n for n, _ in self.named_parameters() if not n.startswith(BASIS_PREFIXES)]

    def group(self, names: list[str]) -> list[nn.Parameter]:
        params = dict(self.named_parameters())
        return [params[n] for n in names]

    def patch_parameters(self) -> int:
        """Sum of K_l over the patched junctions: a directly learned patch's size."""
        return sum(patch_size(w) for w, on in zip(self.hidden, self.junctions, strict=True) if on)

    # ------------------------------------------------------------------ features
    def items(self, ids: torch.Tensor) -> torch.Tensor:
        """Item vectors ``[.., E]`` = id embedding ++ side embedding; ids must be >= 0."""
        parts = [self.item_emb(ids)]
        side = None
        if self.cat_emb is not None:
            c = self.item_category[ids]
            side = self.cat_emb(torch.where(c < 0, self.n_categories, c))
        if self.genre_emb is not None:
            g = self.item_genres[ids]                                         # [.., G]
            ok = (g >= 0).unsqueeze(-1)
            e = self.genre_emb(torch.where(g < 0, self.n_genres, g)) * ok
            mean = e.sum(-2) / ok.sum(-2).clamp(min=1)
            side = mean if side is None else side + mean
        if side is not None:
            parts.append(side)
        return torch.cat(parts, dim=-1)

    def profile_vector(self, profile: torch.Tensor | None, rows: int) -> torch.Tensor:
        """Concatenated profile embeddings [B, P * profile_dim] ([B, 0] without profiles)."""
        if not self.profile_sizes:
            return torch.zeros(rows, 0)
        if profile is None:
            raise ConfigError("PatchedDIN was built with profile features: set batch.profile [B, P]")
        cols = [emb(torch.where(profile[:, j] < 0, s, profile[:, j]))
                for j, (emb, s) in enumerate(zip(self.profile_emb, self.profile_sizes, strict=True))]
        return torch.cat(cols, dim=-1)

    def onehot(self, profile: torch.Tensor | None) -> torch.Tensor | None:
        """The encoder's u: one-hot profile codes [B, sum sizes] (unknown: all zero)."""
        if not self.profile_sizes or profile is None:
            return None
        cols = [torch.nn.functional.one_hot(profile[:, j].clamp(min=0), s).float()
                * (profile[:, j] >= 0).unsqueeze(1)
                for j, s in enumerate(self.profile_sizes)]
        return torch.cat(cols, dim=1)

    # ------------------------------------------------------------------ forward
    def features(self, batch: Batch, t: torch.Tensor) -> torch.Tensor:
        """f's input to FC1 [B, C, in] for target vectors ``t`` [B|1, C, E]: the attention
        pooling, target and profile. No patch acts before FC1, so every model of the same
        f (f alone, DCCL-e, DCCL-m) shares these; ``head`` finishes each."""
        history = require(batch, "history", "PatchedDIN", "set batch.history [B, L]")
        mask = history != PAD                                                 # [B, L]
        h = self.items(history.clamp(min=0)) * mask.unsqueeze(-1)            # [B, L, E]
        z = self.att[1:](attention_first_layer(linear_at(self.att, 0), h, t))  # [B, C, L, A]
        a = self.att_out(z).squeeze(-1) * mask.unsqueeze(1)                   # [B, C, L]
        interest = a @ h                                                      # [B, C, E]
        t = t.expand_as(interest)
        B, C, _ = interest.shape
        prof = self.profile_vector(batch.profile, B)[:, None].expand(B, C, -1)
        return torch.cat([interest, t, interest * t, prof], dim=-1)          # [B, C, in]

    @torch.no_grad()
    def frozen_features(self, history: torch.Tensor, profile: torch.Tensor | None,
                        candidates: torch.Tensor) -> torch.Tensor:
        """``features`` [B, C, in] of ``candidates`` [B, C] given ``history`` [B, L] and
        ``profile`` [B, P] (or None), without gradients (f frozen: MetaPatch, scoring), in
        passes of ``ATTENTION_PAIRS`` (candidate, position) pairs."""
        B, C = candidates.shape
        n = max(1, ATTENTION_PAIRS // max(1, C * history.shape[1]))
        parts = [self.features(Batch(history=history[s:s + n],
                                     profile=None if profile is None else profile[s:s + n]),
                               self.items(candidates[s:s + n]))
                 for s in range(0, B, n)]
        return torch.cat(parts) if parts else torch.zeros(0, C, self.in_width)

    def head(self, x: torch.Tensor, meta: torch.Tensor | None) -> torch.Tensor:
        """Logits [B, C] from ``features`` x [B, C, in]: the junctions, each followed by its
        patch generated from ``meta`` [B, K] (None, or the gate off: f alone)."""
        meta = meta if self.gate else None
        for layer in range(len(self.hidden)):
            x = self.junction[2 * layer + 1](self.junction[2 * layer](x))     # FC_l, PReLU
            if meta is not None and self.junctions[layer]:
                x = x + apply_patch(x, meta @ self.basis[layer].T)           # Eq. 1, Eq. 2
        return self.out(x).squeeze(-1)

    def _logits(self, batch: Batch, t: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] for target vectors ``t`` [B|1, C, E]."""
        return self.head(self.features(batch, t), batch.meta)

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` of ``candidates`` [B, C]."""
        return self._logits(batch, self.items(candidates))

    def score_all(self, batch: Batch) -> torch.Tensor:
        """Logits ``[B, n_items]`` in item chunks of ``ATTENTION_PAIRS`` (item, position) pairs."""
        B = len(batch)
        L = require(batch, "history", "PatchedDIN", "set batch.history").shape[1]
        n = max(1, ATTENTION_PAIRS // max(1, B * L))                           # items per pass
        return score_in_chunks(lambda ids: self._logits(batch, self.items(ids)[None]),
                               self.n_items, n, torch.device("cpu"))

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean BCE of ``batch.items`` [B] against ``batch.labels`` [B]."""
        items = require(batch, "items", "PatchedDIN", "set batch.items [B]")
        labels = require(batch, "labels", "PatchedDIN", "set batch.labels [B]")
        return bce_loss(self.score(batch, items.unsqueeze(1)).squeeze(1), labels)

    def private_parameter_names(self) -> frozenset[str]:
        """None: the device's metapatch is an input, not a parameter."""
        return frozenset()
