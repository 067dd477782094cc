"""AGP (C3DRec Eq. 4): cubic schedule by hand, level masks, masks kept through training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrec.c3drec.agp import (
    AGPSchedule,
    agp_grid,
    agp_sparsity,
    apply_masks,
    level_mask,
    prunable_names,
    prune,
)
from fedrec.c3drec.train import SparseSpec, TrainSpec, make_model, train
from fedrec.errors import ConfigError

S = AGPSchedule(final=0.9, initial=0.0, start=0.0, steps=3, every=1.0)


def test_cubic_schedule_by_hand() -> None:
    expected = [0.0, 0.9 - 0.9 * 8 / 27, 0.9 - 0.9 / 27, 0.9]
    assert [s for _, s in agp_grid(S)] == pytest.approx(expected)
    assert [t for t, _ in agp_grid(S)] == [0.0, 1.0, 2.0, 3.0]
    assert agp_sparsity(1.5, S) == pytest.approx(expected[1])      # last grid point reached
    assert agp_sparsity(-1.0, S) == 0.0 and agp_sparsity(10.0, S) == pytest.approx(0.9)
    shifted = AGPSchedule(final=0.5, initial=0.2, start=2.0, steps=2, every=0.5)
    assert agp_sparsity(2.5, shifted) == pytest.approx(0.5 - 0.3 / 8)


def test_schedule_validation() -> None:
    with pytest.raises(ConfigError):
        AGPSchedule(final=1.0)
    with pytest.raises(ConfigError):
        AGPSchedule(final=0.5, initial=0.6)


def test_level_mask_prunes_smallest_magnitudes_then_index_order() -> None:
    w = torch.tensor([[0.5, -0.1], [0.3, 0.0]])
    assert level_mask(w, 0.5).tolist() == [[True, False], [True, False]]
    already = torch.tensor([[False, True], [True, True]])              # 0.5 was pruned before
    assert level_mask(w, 0.5, already).tolist() == [[False, True], [True, False]]
    assert level_mask(torch.ones(4), 0.5).tolist() == [False, False, True, True]
    assert level_mask(w, 0.0).all() and int(level_mask(w, 0.99).sum()) == 1


def test_prune_zeroes_weights_and_masks_only_shrink() -> None:
    m = make_model(5, 3, 4, seed=0)
    names = prunable_names(m)
    assert names == ["item_emb.weight", "gru.weight_ih_l0", "gru.weight_hh_l0", "out.weight"]
    m1 = prune(m, {}, 0.5, names)
    m2 = prune(m, m1, 0.75, names)
    params = dict(m.named_parameters())
    for n in names:
        assert (~m1[n] & m2[n]).sum() == 0                               # subset
        assert int((~m2[n]).sum()) == int(np.floor(0.75 * params[n].numel() + 1e-9))
        assert (params[n][~m2[n]] == 0).all()


def test_pruned_weights_stay_zero_in_later_training() -> None:
    torch.manual_seed(0)
    m = make_model(6, 3, 4, seed=1)
    masks = prune(m, {}, 0.6, prunable_names(m))
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    sessions = [np.array([0, 1, 2, 3, 4, 5]), np.array([5, 4, 3])]
    train(m, sessions, TrainSpec(epochs=3, batch_events=4, lr=0.5), SparseSpec(),
          np.random.default_rng(0), masks)
    for n, p in m.named_parameters():
        if n in masks:
            assert (p[~masks[n]] == 0).all()
            assert not torch.equal(p[masks[n]], before[n][masks[n]])     # the rest trained


def test_training_with_agp_reaches_the_final_sparsity_exactly() -> None:
    m = make_model(8, 3, 4, seed=2)
    sessions = [np.arange(8), np.arange(8)[::-1]]
    sched = AGPSchedule(final=0.7, start=0.0, steps=4, every=0.5)
    res = train(m, sessions, TrainSpec(epochs=1, batch_events=3), SparseSpec(),
                np.random.default_rng(0), agp=sched, prune_names=prunable_names(m))
    for n, p in m.named_parameters():
        if n in res.masks:
            assert int((p == 0).sum()) >= int(np.floor(0.7 * p.numel() + 1e-9))
            assert int((~res.masks[n]).sum()) == int(np.floor(0.7 * p.numel() + 1e-9))


def test_apply_masks_trainable_only_skips_frozen() -> None:
    m = make_model(4, 2, 2, seed=0)
    mask = {"out.weight": torch.zeros(4, 2, dtype=torch.bool)}
    m.out.weight.requires_grad_(False)
    apply_masks(m, mask, trainable_only=True)
    assert m.out.weight.abs().sum() > 0
    apply_masks(m, mask)
    assert m.out.weight.abs().sum() == 0
