"""PFedRec: no user input, linear score function by default, score function private."""

from __future__ import annotations

import torch

from fedrec.models.base import Batch
from fedrec.models.pfedrec import PFedRecModel


def test_linear_score_function_by_hand() -> None:
    m = PFedRecModel(n_items=3, dim=2, seed=0)
    with torch.no_grad():
        m.item_emb.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        m.score_fn[1].weight.copy_(torch.tensor([[2.0, -1.0]]))
        m.score_fn[1].bias.fill_(0.5)
    s = m.score_all(Batch(items=torch.tensor([0, 1])))
    assert torch.equal(s, torch.tensor([[2.5, -0.5, 1.5], [2.5, -0.5, 1.5]]))
    assert m.private_parameter_names() == {"score_fn.1.weight", "score_fn.1.bias"}
    assert m.shared_parameter_names() == ["item_emb.weight"]


def test_scores_ignore_rows() -> None:
    m = PFedRecModel(n_items=4, dim=3, hidden=(5,), seed=1)
    s = m.score(Batch(items=torch.tensor([0, 1])), torch.tensor([[2, 3], [2, 3]]))
    assert torch.equal(s[0], s[1])


def test_score_all_rows_are_independent_memory() -> None:
    m = PFedRecModel(n_items=3, dim=2, seed=0)
    with torch.no_grad():
        s = m.score_all(Batch(items=torch.tensor([0, 1])))
    s[0, 0] = 100.0  # e.g. masking a training item of row 0
    assert s[1, 0] != 100.0
