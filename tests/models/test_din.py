"""DIN: activation unit algebra, masking of PAD, empty histories, chunked score_all."""

from __future__ import annotations

import pytest
import torch

from fedrec.errors import ConfigError
from fedrec.models import din
from fedrec.models.base import PAD, Batch
from fedrec.models.din import DIN, attention_first_layer

HIST = torch.tensor([[PAD, 2, 3], [1, 0, 4], [PAD, PAD, PAD]])


def _model() -> DIN:
    return DIN(n_items=6, dim=4, attention_hidden=(6, 3), mlp_hidden=(5,), seed=0)


def _reference(m: DIN, items: list[int], target: int) -> torch.Tensor:
    """Zhou et al. Eq. (3) + the output MLP, written literally for one (history, target)."""
    t = m.item_emb.weight[target]
    interest = torch.zeros_like(t)
    for i in items:
        h = m.item_emb.weight[i]
        a = m.att_out(m.att(torch.cat([h, t, h - t, h * t])))
        interest = interest + a * h
    return m.head_out(m.head(torch.cat([interest, t, interest * t]))).squeeze(-1)


def test_split_first_layer_equals_concatenation() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(12, 5)
    h, t = torch.randn(2, 4, 3), torch.randn(2, 6, 3)
    pairs = torch.cat(
        [h[:, None].expand(-1, 6, -1, -1), t[:, :, None].expand(-1, -1, 4, -1)], dim=-1
    )  # [B, C, L, 2D]
    hh, tt = pairs[..., :3], pairs[..., 3:]
    expected = layer(torch.cat([hh, tt, hh - tt, hh * tt], dim=-1))
    assert torch.allclose(attention_first_layer(layer, h, t), expected, atol=1e-5)


def test_scores_match_literal_din() -> None:
    m = _model()
    cands = torch.tensor([[0, 5], [4, 4], [1, 2]])
    s = m.score(Batch(history=HIST), cands)
    for row, items in enumerate([[2, 3], [1, 0, 4], []]):
        for col in range(2):
            ref = _reference(m, items, int(cands[row, col]))
            assert torch.allclose(s[row, col], ref, atol=1e-5)


def test_padding_does_not_change_scores() -> None:
    m = _model()
    wide = torch.cat([torch.full((3, 2), PAD), HIST], dim=1)
    assert torch.allclose(m.score_all(Batch(history=wide)), m.score_all(Batch(history=HIST)))


def test_history_changes_scores() -> None:
    m = _model()
    s = m.score_all(Batch(history=HIST))
    assert not torch.allclose(s[0], s[2])


def test_score_all_in_chunks_equals_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    m, b = _model(), Batch(history=HIST)
    whole = m.score_all(b)
    monkeypatch.setattr(din, "chunk_size", lambda rows, per_item: 4)  # chunks 4, 2
    assert torch.allclose(m.score_all(b), whole, atol=1e-6)


def test_private_prefixes_and_bad_widths() -> None:
    m = DIN(n_items=3, dim=2, private_prefixes=("head",), seed=0)
    assert m.private_parameter_names() == {
        n for n, _ in m.named_parameters() if n.startswith("head")
    }
    assert "head_out.weight" in m.private_parameter_names()
    with pytest.raises(ConfigError, match="attention_hidden=\\(\\) needs >= 1 width"):
        DIN(n_items=3, attention_hidden=())
