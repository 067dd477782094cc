"""The contract every recommendation model implements.

A model is a ``torch.nn.Module`` that scores (user context, item) pairs. The user context
is a ``Batch``: contiguous user ids for embedding models (MF, NCF), item histories for
sequence models (GRU4Rec, DIN); a model reads only the fields it needs.

Federated use: a device builds the model with ``n_users=1`` (its own user is row 0), loads
the *shared* parameters it received and the *private* ones from its own storage, trains with
``loss``, and uploads only (a function of) the shared parameters. ``private_parameter_names``
is the single source of truth for what never leaves a device.

Item ids are contiguous ``0..n_items-1``. Histories are right-aligned (most recent item
last) and left-padded with ``PAD = -1``; models map PAD to a zero embedding.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

PAD: int = -1


@dataclass
class Batch:
    """One mini-batch. B = batch size, L = history length, N = negatives per row.

    users:     LongTensor [B]    contiguous user ids (row 0 on a device), or None
    items:     LongTensor [B]    target / positive item per row
    labels:    FloatTensor [B]   1.0 positive, 0.0 negative (pointwise losses), or None
    neg_items: LongTensor [B, N] negatives for pairwise (BPR) / sampled-softmax losses, or None
    history:   LongTensor [B, L] previous items, right-aligned, left-padded with PAD, or None
    profile:   LongTensor [B, P] user-profile codes (-1 unknown), for models with profile
               features (``PatchedDIN``), or None
    meta:      FloatTensor [B, K] a per-row conditioning vector (DCCL's metapatch: the row's
               device model), or None
    """

    users: torch.Tensor | None = None
    items: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    neg_items: torch.Tensor | None = None
    history: torch.Tensor | None = None
    profile: torch.Tensor | None = None
    meta: torch.Tensor | None = None

    def __len__(self) -> int:
        for t in (self.users, self.items, self.history):
            if t is not None:
                return int(t.shape[0])
        return 0


class RecModel(nn.Module, ABC):
    """Common contract: score candidates, score all items, loss on a batch, privacy split."""

    n_items: int

    @abstractmethod
    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        """Scores of candidate items. candidates: LongTensor [B, C] -> FloatTensor [B, C]."""

    @abstractmethod
    def score_all(self, batch: Batch) -> torch.Tensor:
        """Scores of every item for each row's user context -> FloatTensor [B, n_items]."""

    @abstractmethod
    def loss(self, batch: Batch) -> torch.Tensor:
        """Scalar training loss of the batch (mean over rows)."""

    @abstractmethod
    def private_parameter_names(self) -> frozenset[str]:
        """Names (as in ``named_parameters``) that stay on the device."""

    def shared_parameter_names(self) -> list[str]:
        """Names of parameters that travel, in ``named_parameters`` order."""
        private = self.private_parameter_names()
        return [n for n, _ in self.named_parameters() if n not in private]
