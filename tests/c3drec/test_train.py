"""Session training pieces, the loss with each sparse layer, next-click evaluation by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedrec.c3drec.agp import AGPSchedule
from fedrec.c3drec.train import (
    GammaPlan,
    SparseSpec,
    TrainSpec,
    batch_loss,
    make_model,
    next_click_events,
    pack,
    pad_pieces,
    pieces,
    rank_metrics_topk,
    step_states,
    topk_among,
    train,
    user_embeddings,
)
from fedrec.models.base import PAD, Batch


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_pieces_share_one_item_and_cover_every_transition_once() -> None:
    got = [p.tolist() for p in pieces([np.arange(6), np.array([7]), np.array([8, 9])], 2)]
    assert got == [[0, 1, 2], [2, 3, 4], [4, 5], [8, 9]]             # a 1-item session: none


def test_pack_respects_the_update_interval() -> None:
    lengths = np.array([3, 3, 2, 5])                                   # 2, 2, 1, 4 targets
    assert [b.tolist() for b in pack(lengths, 4, np.arange(4))] == [[0, 1], [2], [3]]
    assert [b.tolist() for b in pack(lengths, 100, np.array([3, 0, 1, 2]))] == [[3, 0, 1, 2]]


def test_pad_pieces_by_hand() -> None:
    inp, tgt = pad_pieces([np.array([4, 5, 6]), np.array([7, 8])])
    assert inp.tolist() == [[4, 5], [7, PAD]] and tgt.tolist() == [[5, 6], [8, PAD]]


def test_step_states_equal_user_embedding_of_each_prefix() -> None:
    m = make_model(9, 3, 4, seed=0)
    inp, _ = pad_pieces([np.array([4, 5, 6, 1]), np.array([7, 8])])
    states = step_states(m, inp)
    for r, seq in enumerate([[4, 5, 6], [7]]):
        for j in range(1, len(seq) + 1):
            u = m.user_embedding(Batch(history=torch.tensor([seq[:j]])))[0]
            assert torch.allclose(states[r, j - 1], u, atol=1e-6)


def test_loss_full_softmax_and_shared_negatives() -> None:
    m = make_model(6, 3, 4, seed=0)
    inp, tgt = pad_pieces([np.array([1, 2, 3]), np.array([4, 0])])
    valid = tgt != PAD
    u = step_states(m, inp)[valid]
    expected = F.cross_entropy(u @ m.out.weight.T, tgt[valid])
    assert torch.allclose(batch_loss(m, inp, tgt, SparseSpec())[0], expected)
    every = torch.arange(6)                                            # samples covering all items
    assert torch.allclose(batch_loss(m, inp, tgt, SparseSpec(), every)[0], expected)
    cols = torch.tensor([0, 2, 3, 5])                                  # targets {2, 3, 0} + item 5
    sampled = F.cross_entropy(u @ m.out.weight[cols].T, torch.tensor([1, 2, 0]))
    assert torch.allclose(batch_loss(m, inp, tgt, SparseSpec(), torch.tensor([5]))[0], sampled)


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_sparse_layer_and_lasso_per_mode(mode: str) -> None:
    m = make_model(6, 3, 4, seed=0)
    inp, tgt = pad_pieces([np.array([1, 2, 3])])
    u = step_states(m, inp)[tgt != PAD]
    v = m.out.weight
    g = 0.2
    u2 = u * (u.abs() > g) if mode == "push" else u
    v2 = v * (v.abs() > g) if mode == "pull" else v
    l1 = u2.abs().sum() / len(u2) if mode == "push" else v2.abs().sum() / v2.shape[0]
    expected = F.cross_entropy(u2 @ v2.T, tgt[tgt != PAD]) + 0.5 * l1
    assert torch.allclose(batch_loss(m, inp, tgt, SparseSpec(mode, g, 0.5))[0], expected)


def test_device_training_freezes_everything_but_the_user_side() -> None:
    m = make_model(6, 3, 4, seed=0)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    spec = TrainSpec(epochs=2, batch_events=3, lr=0.3, trainable=("item_emb.", "gru."))
    res = train(m, [np.array([1, 2, 3, 1])], spec, SparseSpec(), np.random.default_rng(0))
    now = dict(m.named_parameters())
    assert torch.equal(now["out.weight"], before["out.weight"])
    assert not torch.equal(now["gru.weight_hh_l0"], before["gru.weight_hh_l0"])
    assert torch.equal(now["item_emb.weight"][[0, 4, 5]], before["item_emb.weight"][[0, 4, 5]])
    assert res.events == 2 * 3 and res.steps == 2 and all(p.requires_grad for p in m.parameters())


def test_own_rows_limit_the_item_table_to_the_sessions_items() -> None:
    m = make_model(6, 3, 4, seed=0)
    before = m.out.weight.detach().clone()
    spec = TrainSpec(epochs=2, batch_events=3, lr=0.3, trainable=("gru.", "out."),
                     own_rows=("out.weight",))
    train(m, [np.array([1, 2, 3, 1])], spec, SparseSpec(), np.random.default_rng(0))
    changed = (m.out.weight.detach() != before).any(dim=1)
    assert changed.tolist() == [False, True, True, True, False, False]


def test_gamma_plan_reaches_the_target_embedding_sparsity() -> None:
    m = make_model(10, 3, 6, seed=0)
    plan = GammaPlan(AGPSchedule(final=0.8, steps=2, every=0.5))
    res = train(m, [np.arange(10), np.arange(10)[::-1]], TrainSpec(epochs=2, batch_events=4),
                SparseSpec("pull", 0.0, 0.01), np.random.default_rng(0), gamma_plan=plan)
    v = m.out.weight.detach().numpy()
    assert (np.abs(v) <= res.gamma).mean() >= 0.8 > (np.abs(v) < res.gamma).mean()


def test_test_events_by_hand() -> None:
    hist, tgt = next_click_events([np.array([3, 4, 5]), np.array([6]), np.array([7, 8])], 2)
    assert hist.tolist() == [[PAD, 3], [3, 4], [PAD, 7]] and tgt.tolist() == [4, 5, 8]
    assert next_click_events([], 2)[0].shape == (0, 2)


def test_topk_among_candidates_ties_by_lower_id_and_pads() -> None:
    u = np.array([[1.0, 0.0]])
    emb = np.array([[1.0, 0.0], [2.0, 0.0], [1.0, 5.0]])             # items 9, 4, 7
    assert topk_among(u, emb, np.array([9, 4, 7]), 2).tolist() == [[4, 7]]   # 7 ties 9: lower
    assert topk_among(u, emb, np.array([9, 4, 7]), 5).tolist() == [[4, 7, 9, -1, -1]]
    assert topk_among(u, emb[:0], np.zeros(0, np.int64), 2).tolist() == [[-1, -1]]


def test_rank_metrics_from_topk() -> None:
    top = np.array([[5, 6, 7], [1, 2, 3], [9, 8, -1]])
    m = rank_metrics_topk(top, np.array([6, 4, 9]), 3)
    assert m["hit"].tolist() == [1.0, 0.0, 1.0] and m["rr"].tolist() == [0.5, 0.0, 1.0]
    assert rank_metrics_topk(top, np.array([6, 4, 9]), 1)["hit"].tolist() == [0.0, 0.0, 1.0]


def test_push_user_embeddings_are_thresholded() -> None:
    m = make_model(6, 3, 4, seed=0)
    hist, _ = next_click_events([np.array([1, 2, 3])], 4)
    raw = user_embeddings(m, hist, SparseSpec())
    cut = user_embeddings(m, hist, SparseSpec("push", 0.1))
    np.testing.assert_array_equal(cut, np.where(np.abs(raw) > 0.1, raw, 0))
    np.testing.assert_array_equal(user_embeddings(m, hist, SparseSpec("pull", 0.1)), raw)
