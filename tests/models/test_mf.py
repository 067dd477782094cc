"""MF: scores and both losses against hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from fedrec.errors import ConfigError
from fedrec.models.base import Batch
from fedrec.models.mf import MF


def _mf(loss: str, bias: bool = True) -> MF:
    m = MF(n_users=2, n_items=3, dim=2, loss=loss, item_bias=bias, seed=0)
    with torch.no_grad():
        m.user_emb.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        m.item_emb.weight.copy_(torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, -1.0]]))
        if bias:
            m.item_bias.copy_(torch.tensor([0.5, 0.0, -0.5]))
    return m


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_score_all_is_dot_plus_bias() -> None:
    s = _mf("bpr").score_all(Batch(users=torch.tensor([0, 1])))
    assert torch.allclose(s, torch.tensor([[1.5, 2.0, -0.5], [2.5, 0.0, -2.5]]))


def test_without_bias_no_bias_parameter() -> None:
    m = _mf("bpr", bias=False)
    assert [n for n, _ in m.named_parameters()] == ["user_emb.weight", "item_emb.weight"]
    assert torch.allclose(m.score_all(Batch(users=torch.tensor([1]))), torch.tensor([[2.0, 0, -2]]))


def test_bpr_loss_by_hand() -> None:
    # user 0: pos item 1 (2.0) vs negs 0 (1.5), 2 (-0.5)
    b = Batch(users=torch.tensor([0]), items=torch.tensor([1]), neg_items=torch.tensor([[0, 2]]))
    expected = -(math.log(_sig(0.5)) + math.log(_sig(2.5))) / 2
    assert _mf("bpr").loss(b).item() == pytest.approx(expected, rel=1e-6)


def test_bce_loss_by_hand() -> None:
    b = Batch(users=torch.tensor([0, 1]), items=torch.tensor([1, 2]), labels=torch.tensor([1.0, 0]))
    expected = -(math.log(_sig(2.0)) + math.log(1 - _sig(-2.5))) / 2
    assert _mf("bce").loss(b).item() == pytest.approx(expected, rel=1e-6)


def test_missing_fields_say_how_to_fix() -> None:
    b = Batch(users=torch.tensor([0]), items=torch.tensor([1]))
    with pytest.raises(ConfigError, match=r"MF\(loss='bpr'\) needs batch.neg_items"):
        _mf("bpr").loss(b)
    with pytest.raises(ConfigError, match=r"MF\(loss='bce'\) needs batch.labels"):
        _mf("bce").loss(b)
    with pytest.raises(ConfigError, match="MF needs batch.users"):
        _mf("bce").score_all(Batch(items=torch.tensor([1])))


def test_unknown_loss() -> None:
    with pytest.raises(ConfigError, match=r"unknown loss 'mse'; use one of \['bpr', 'bce'\]"):
        MF(n_users=1, n_items=2, loss="mse")  # type: ignore[arg-type]


def test_device_model_gradient_reaches_only_touched_item_rows() -> None:
    m = _mf("bpr")
    b = Batch(users=torch.tensor([0]), items=torch.tensor([1]), neg_items=torch.tensor([[0]]))
    m.loss(b).backward()
    assert m.item_emb.weight.grad[2].abs().sum() == 0
    assert m.item_emb.weight.grad[:2].abs().sum() > 0
    assert m.user_emb.weight.grad[1].abs().sum() == 0
