"""Neural matrix factorisation (NeuMF): a GMF tower and an MLP tower fused by one output layer.

He et al., "Neural Collaborative Filtering", WWW 2017. Federated form (FedNCF, Perifanis &
Efraimidis 2022): both user embeddings stay on the device; item embeddings, the MLP and the
output layer are aggregated by the server.

score(u, i) = h^T [p_u * q_i ; MLP([p'_u ; q'_i])] + b
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
    linear_at,
    mlp,
    require,
    score_in_chunks,
    seeded,
)

# Std of the N(0, s^2) embedding init (He et al. 2017 use 0.01; 0.1 trains faster with Adam).
INIT_STD = 0.1


class NeuMF(RecModel):
    """NeuMF; the two user tables are private, everything else is shared.

    Parameters
    ----------
    n_users : int
        Users (``1`` on a device, whose user is row 0).
    n_items : int
        Items, ids ``0..n_items-1``.
    gmf_dim : int
        GMF embedding size D_g.
    mlp_layers : tuple of int
        Widths of the MLP tower; the input ``[p'_u ; q'_i]`` is ``mlp_layers[0]`` wide, so each
        MLP embedding is ``mlp_layers[0] // 2`` (as in He et al.); ReLU after every layer.
    seed : int or None
        Seed of the initialisation (the caller's RNG is left untouched); ``None`` draws from
        the global generator.

    Notes
    -----
    Loss: BCE on ``batch.items`` / ``batch.labels``. ``score_all`` runs in item chunks because
    the MLP tower needs an activation per (user, item) pair.
    """

    def __init__(
        self,
        *,
        n_users: int,
        n_items: int,
        gmf_dim: int = 16,
        mlp_layers: tuple[int, ...] = (64, 32, 16),
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_positive("NeuMF", n_users=n_users, n_items=n_items, gmf_dim=gmf_dim)
        if len(mlp_layers) < 2 or mlp_layers[0] % 2 or min(mlp_layers) < 1:
            raise ConfigError(
                f"NeuMF: mlp_layers={mlp_layers!r} must have >= 2 positive widths, the first even"
            )
        self.n_users, self.n_items = n_users, n_items
        d_m = mlp_layers[0] // 2
        with seeded(seed):
            self.user_gmf = nn.Embedding(n_users, gmf_dim)  # [U, Dg] private
            self.user_mlp = nn.Embedding(n_users, d_m)  # [U, Dm] private
            self.item_gmf = nn.Embedding(n_items, gmf_dim)  # [I, Dg] shared
            self.item_mlp = nn.Embedding(n_items, d_m)  # [I, Dm] shared
            for table in (self.user_gmf, self.user_mlp, self.item_gmf, self.item_mlp):
                nn.init.normal_(table.weight, std=INIT_STD)
            self.mlp = mlp(mlp_layers, nn.ReLU)  # [.., 2Dm] -> [.., M]
            self.out = nn.Linear(gmf_dim + mlp_layers[-1], 1)  # [.., Dg + M] -> [.., 1]

    def _fuse(
        self, ug: torch.Tensor, um: torch.Tensor, ig: torch.Tensor, im: torch.Tensor
    ) -> torch.Tensor:
        """Scores [B, C] from user parts ``ug`` [B, Dg], ``um`` [B, Dm] and item parts [B|1, C, .].

        The first MLP layer acts on ``[p'_u ; q'_i]``; it is split as ``W_u p'_u + W_i q'_i``
        so the user half is computed once per row instead of once per candidate.
        """
        first = linear_at(self.mlp, 0)
        d_m = um.shape[-1]
        hu = um @ first.weight[:, :d_m].T + first.bias  # [B, H1]
        hi = im @ first.weight[:, d_m:].T  # [B|1, C, H1]
        h = self.mlp[2:](torch.relu(hu.unsqueeze(1) + hi))  # [B, C, M]; mlp[1] is that ReLU
        g = ug.unsqueeze(1) * ig  # [B, C, Dg]
        return self.out(torch.cat([g, h], dim=-1)).squeeze(-1)  # [B, C]

    def _user_parts(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        users = require(batch, "users", "NeuMF", "set batch.users (row 0 on a device)")
        return self.user_gmf(users), self.user_mlp(users)  # [B, Dg], [B, Dm]

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, C]`` (logits) of ``candidates`` [B, C] for ``batch.users`` [B]."""
        ug, um = self._user_parts(batch)
        return self._fuse(ug, um, self.item_gmf(candidates), self.item_mlp(candidates))

    def score_all(self, batch: Batch) -> torch.Tensor:
        """Scores ``[B, n_items]`` (logits), computed in item chunks of bounded memory."""
        ug, um = self._user_parts(batch)
        width = max(linear_at(self.mlp, 0).out_features, ug.shape[-1])

        def chunk(ids: torch.Tensor) -> torch.Tensor:  # ids [C] -> [B, C]
            return self._fuse(ug, um, self.item_gmf(ids)[None], self.item_mlp(ids)[None])

        n = chunk_size(ug.shape[0], width)
        return score_in_chunks(chunk, self.n_items, n, ug.device)

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean BCE of ``batch.items`` [B] against ``batch.labels`` [B]."""
        items = require(batch, "items", "NeuMF", "set batch.items [B]")
        labels = require(batch, "labels", "NeuMF", "set batch.labels [B] (1 pos, 0 neg)")
        return bce_loss(self.score(batch, items.unsqueeze(1)).squeeze(1), labels)

    def private_parameter_names(self) -> frozenset[str]:
        """The two user tables: ``{"user_gmf.weight", "user_mlp.weight"}``."""
        return frozenset({"user_gmf.weight", "user_mlp.weight"})
