"""Shared helpers: seeded init, PAD embedding, losses, chunking, name prefixes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fedrec.errors import ConfigError
from fedrec.models.base import PAD
from fedrec.models.common import (
    bpr_loss,
    check_positive,
    chunk_size,
    embed_history,
    prefixed_names,
    sampled_softmax_loss,
    score_in_chunks,
    seeded,
)


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_seeded_is_reproducible_and_restores_the_caller_state() -> None:
    torch.manual_seed(1)
    with seeded(7):
        a = torch.rand(2)
    after = torch.rand(2)
    torch.manual_seed(1)
    with seeded(7):
        b = torch.rand(2)
    assert torch.equal(a, b)
    assert torch.equal(torch.rand(2), after)
    torch.manual_seed(1)
    with seeded(None):  # None draws from the caller's generator
        c = torch.rand(2)
    torch.manual_seed(1)
    assert torch.equal(c, torch.rand(2))


def test_embed_history_zeroes_pad() -> None:
    table = nn.Embedding(3, 2)
    with torch.no_grad():
        table.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    emb, mask = embed_history(table, torch.tensor([[PAD, 2], [0, 1]]))
    assert torch.equal(emb, torch.tensor([[[0.0, 0.0], [5.0, 6.0]], [[1.0, 2.0], [3.0, 4.0]]]))
    assert torch.equal(mask, torch.tensor([[False, True], [True, True]]))


def test_bpr_loss_by_hand() -> None:
    loss = bpr_loss(torch.tensor([1.0, 0.0]), torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
    expected = -(math.log(0.5) + math.log(_sig(2.0)) + 2 * math.log(0.5)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_sampled_softmax_positive_in_column_zero() -> None:
    loss = sampled_softmax_loss(torch.tensor([[0.0, 0.0, 0.0], [math.log(2), 0.0, 0.0]]))
    assert loss.item() == pytest.approx((math.log(3) + math.log(2)) / 2, rel=1e-6)


def test_chunk_size() -> None:
    assert chunk_size(rows=4, per_item=8, budget=100) == 3
    assert chunk_size(rows=1000, per_item=1000, budget=100) == 1
    assert chunk_size(rows=0, per_item=0, budget=100) == 100


def test_score_in_chunks_covers_every_item_once() -> None:
    seen: list[list[int]] = []

    def fn(ids: torch.Tensor) -> torch.Tensor:
        seen.append(ids.tolist())
        return ids.float().unsqueeze(0).repeat(2, 1)  # [2, C]

    out = score_in_chunks(fn, n_items=5, chunk=2, device=torch.device("cpu"))
    assert seen == [[0, 1], [2, 3], [4]]
    assert torch.equal(out, torch.arange(5.0).repeat(2, 1))


def test_prefixed_names() -> None:
    m = nn.Sequential(nn.Linear(1, 1), nn.Linear(1, 1))
    assert prefixed_names(m, (), "X") == frozenset()
    assert prefixed_names(m, ("1.",), "X") == {"1.weight", "1.bias"}
    with pytest.raises(ConfigError, match="X: private prefix '2.' matches no parameter"):
        prefixed_names(m, ("2.",), "X")


def test_check_positive() -> None:
    check_positive("M", a=1, b=3)
    with pytest.raises(ConfigError, match="M: b must be a positive integer, got 0"):
        check_positive("M", a=1, b=0)
    with pytest.raises(ConfigError, match="got 1.5"):
        check_positive("M", a=1.5)  # type: ignore[arg-type]
