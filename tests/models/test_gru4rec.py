"""GRU4Rec: padding handling, empty histories, pull/push factorisation, losses, sparse layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fedrec.errors import ConfigError
from fedrec.models.base import PAD, Batch
from fedrec.models.gru4rec import GRU4Rec, hard_threshold, right_pad

HIST = torch.tensor([[PAD, PAD, 3, 1], [4, 0, 2, 2], [PAD, PAD, PAD, PAD], [PAD, PAD, PAD, 5]])


def _model(**kw) -> GRU4Rec:
    return GRU4Rec(n_items=6, embedding_dim=4, hidden_dim=5, seed=0, **kw)


def _reference_user(m: GRU4Rec, items: list[int]) -> torch.Tensor:
    """Last GRU state after the items alone, no padding anywhere; zeros when empty."""
    if not items:
        return torch.zeros(m.gru.hidden_size)
    _, h = m.gru(m.item_emb(torch.tensor([items])))
    return h[-1, 0]


def test_right_pad_by_hand() -> None:
    ids, length = right_pad(HIST)
    assert torch.equal(
        ids, torch.tensor([[3, 1, PAD, PAD], [4, 0, 2, 2], [PAD] * 4, [5] + [PAD] * 3])
    )
    assert torch.equal(length, torch.tensor([2, 4, 0, 1]))


def test_user_embedding_equals_unpadded_gru() -> None:
    m = _model(num_layers=2)
    u = m.user_embedding(Batch(history=HIST))
    for row, items in enumerate([[3, 1], [4, 0, 2, 2], [], [5]]):
        assert torch.allclose(u[row], _reference_user(m, items), atol=1e-6)
    assert u[2].abs().sum() == 0


def test_more_left_padding_changes_nothing() -> None:
    m = _model()
    wide = torch.cat([torch.full((4, 3), PAD), HIST], dim=1)
    assert torch.allclose(m.score_all(Batch(history=wide)), m.score_all(Batch(history=HIST)))


def test_zero_length_history_column() -> None:
    s = _model().score_all(Batch(history=torch.zeros(2, 0, dtype=torch.long)))
    assert torch.equal(s, torch.zeros(2, 6))


@pytest.mark.parametrize("bias", [False, True])
def test_scores_factorise_into_user_and_item_embeddings(bias: bool) -> None:
    m = _model(output_bias=bias)
    b = Batch(history=HIST)
    expected = m.user_embedding(b) @ m.item_embeddings().T
    if bias:
        expected = expected + m.item_bias()
    else:
        assert m.item_bias() is None
    assert m.item_embeddings().shape == (6, 5)
    assert torch.allclose(m.score_all(b), expected, atol=1e-6)


def test_full_and_sampled_cross_entropy() -> None:
    m = _model()
    items, neg = torch.tensor([0, 1, 2, 3]), torch.tensor([[1, 2], [0, 3], [4, 5], [1, 1]])
    logits = m.score_all(Batch(history=HIST))
    full = F.cross_entropy(logits, items)
    assert torch.allclose(m.loss(Batch(history=HIST, items=items)), full)
    sampled = F.cross_entropy(
        logits.gather(1, torch.cat([items[:, None], neg], 1)), torch.zeros(4, dtype=torch.long)
    )
    assert torch.allclose(m.loss(Batch(history=HIST, items=items, neg_items=neg)), sampled)


def test_hard_threshold_by_hand() -> None:
    x = torch.tensor([0.1, -0.3, 0.2, -0.05])
    assert torch.equal(hard_threshold(x, 0.15), torch.tensor([0.0, -0.3, 0.2, -0.0]))
    assert hard_threshold(x, 0.0) is x


def test_user_sparsity_zeros_small_entries_and_adds_lasso() -> None:
    dense, sparse = _model(), _model(sparse="user", threshold=0.1, lasso=0.5)
    b = Batch(history=HIST, items=torch.tensor([0, 1, 2, 3]))
    u_dense, u = dense.user_embedding(b), sparse.user_embedding(b)
    assert torch.equal(u, u_dense * (u_dense.abs() > 0.1))
    assert (u == 0).sum() > (u_dense == 0).sum()
    ce = F.cross_entropy(sparse.score_all(b), b.items)
    expected = ce + 0.5 * u.abs().sum() / 4
    assert torch.allclose(sparse.loss(b), expected)


def test_item_sparsity_acts_on_the_gru_input() -> None:
    m = _model(sparse="item", threshold=0.5)
    with torch.no_grad():
        m.item_emb.weight.mul_(0).add_(0.4)  # every input entry below the threshold
    u = m.user_embedding(Batch(history=torch.tensor([[1, 2, 3]])))
    ref = m.gru(torch.zeros(1, 3, 4))[1][-1, 0]
    assert torch.allclose(u[0], ref)


def test_private_prefixes() -> None:
    m = _model(private_prefixes=("gru.",))
    assert m.private_parameter_names() == {n for n, _ in m.gru.named_parameters(prefix="gru")}
    assert m.shared_parameter_names() == ["item_emb.weight", "out.weight"]
    with pytest.raises(ConfigError, match="private prefix 'lstm.' matches no parameter"):
        _model(private_prefixes=("lstm.",))


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="unknown sparse='items'"):
        _model(sparse="items")
    with pytest.raises(ConfigError, match="must be >= 0"):
        _model(threshold=-1.0)
