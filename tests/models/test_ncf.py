"""NeuMF: the split first layer equals the paper's concatenation; chunked score_all is exact."""

from __future__ import annotations

import pytest
import torch

from fedrec.errors import ConfigError
from fedrec.models import ncf
from fedrec.models.base import Batch
from fedrec.models.ncf import NeuMF


def _reference(m: NeuMF, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """He et al. Eq. (12) written literally, one (user, item) pair per row."""
    g = m.user_gmf(users) * m.item_gmf(items)
    h = m.mlp(torch.cat([m.user_mlp(users), m.item_mlp(items)], dim=-1))
    return m.out(torch.cat([g, h], dim=-1)).squeeze(-1)


def test_score_matches_literal_neumf() -> None:
    m = NeuMF(n_users=3, n_items=5, gmf_dim=4, mlp_layers=(8, 6, 4), seed=1)
    users = torch.tensor([0, 1, 2])
    cands = torch.tensor([[0, 4], [2, 2], [3, 1]])
    expected = _reference(m, users.repeat_interleave(2), cands.reshape(-1)).reshape(3, 2)
    assert torch.allclose(m.score(Batch(users=users), cands), expected, atol=1e-6)


def test_score_all_in_chunks_equals_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    m = NeuMF(n_users=2, n_items=7, gmf_dim=4, mlp_layers=(8, 4), seed=2)
    b = Batch(users=torch.tensor([1, 0]))
    whole = m.score_all(b)
    monkeypatch.setattr(ncf, "chunk_size", lambda rows, per_item: 3)  # chunks 3, 3, 1
    chunked = m.score_all(b)
    assert torch.allclose(chunked, whole, atol=1e-6)
    assert torch.allclose(
        whole,
        _reference(m, torch.tensor([1] * 7 + [0] * 7), torch.arange(7).repeat(2)).reshape(2, 7),
        atol=1e-6,
    )


def test_bad_mlp_layers() -> None:
    with pytest.raises(ConfigError, match="mlp_layers=.*the first even"):
        NeuMF(n_users=1, n_items=2, mlp_layers=(7, 4))
