"""The stacked math: AUC, Algorithm 3's acceptance rule, and a cohort equal to its devices
trained one at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clients.coda_device import auc
from fedrec.coda.data import Block
from fedrec.coda.model import classifier_logits, init_classifier, init_ctr
from fedrec.coda.train import (
    adam_fit,
    auc_rows,
    criterion,
    greedy_fit,
    inputs,
    pad_stack,
    schedule,
    stack,
)

CATS = np.arange(30) % 4


def block(rng: np.random.Generator, n: int, items: np.ndarray) -> Block:
    hist = rng.choice(items, size=(n, 5)).astype(np.int32)
    hist[rng.random((n, 5)) < 0.3] = -1
    hist = -np.sort(-hist, axis=1)                       # -1 padding at the end
    return Block(rng.choice(items, n), (rng.random(n) < 0.3).astype(np.int8), hist)


def test_auc_rows_matches_the_rank_formula_with_ties():
    rng = np.random.default_rng(1)
    s = np.round(rng.normal(size=(4, 30)), 1)            # ties on purpose
    y = (rng.random((4, 30)) < 0.4).astype(np.float32)
    m = np.ones((4, 30), np.float32)
    m[2, 20:] = 0
    got = auc_rows(torch.from_numpy(s), torch.from_numpy(y), torch.from_numpy(m)).numpy()
    for i in range(4):
        keep = m[i] > 0
        assert got[i] == pytest.approx(auc(s[i][keep], y[i][keep]), abs=1e-12)
    one = auc_rows(torch.zeros(1, 3), torch.ones(1, 3), torch.ones(1, 3))
    assert torch.isnan(one).all()


def test_one_class_validation_falls_back_to_minus_logloss():
    s, y, m = torch.tensor([[0.0, 2.0]]), torch.ones(1, 2), torch.ones(1, 2)
    want = -float(torch.nn.functional.binary_cross_entropy_with_logits(s[0], y[0]))
    assert float(criterion(s, y, m)[0]) == pytest.approx(want)


def device_case(seed: int):
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(30, 20, replace=False))
    train = inputs(block(rng, 40 + 5 * seed, rows), rows, CATS)
    valid = inputs(block(rng, 12 + seed, rows), rows, CATS)
    return rows, train, valid


def greedy(cases, accept=True, lr=0.5, seeds=(0, 1, 2)):
    full = init_ctr(30, 4, 3, (4,), (4,), seed=0)
    T = max(len(r) for r, _, _ in cases)
    params = []
    for rows, _, _ in cases:
        p = {**full, "item": torch.zeros(T, 3)}
        p["item"][:len(rows)] = full["item"][torch.from_numpy(rows)]
        params.append(p)
    x, _ = pad_stack([t for _, t, _ in cases])
    v, vm = pad_stack([va for _, _, va in cases])
    steps = schedule([len(t["item"]) for _, t, _ in cases], 8,
                     [np.random.default_rng([7, s]) for s in seeds[:len(cases)]])
    return greedy_fit(stack(params), x, steps, v, vm, lr, accept)


def test_a_kept_step_always_improves_validation_and_a_rejected_one_changes_nothing():
    cases = [device_case(s) for s in range(3)]
    _, st = greedy(cases)
    assert (st.accepted + st.rejected == np.array([5, 6, 7])).all()     # ceil(n / 8) steps
    assert (st.end >= st.start).all()
    assert (st.improved == (st.accepted > 0)).all()
    _, st2 = greedy(cases, accept=False)
    assert (st2.rejected == 0).all() and (st2.accepted == st.accepted + st.rejected).all()


def test_a_cohort_trains_each_device_as_it_would_alone():
    cases = [device_case(s) for s in range(3)]
    together, st = greedy(cases)
    for i, case in enumerate(cases):
        alone, st1 = greedy([case], seeds=(i,))
        n = len(case[0])
        assert st1.accepted[0] == st.accepted[i] and st1.rejected[0] == st.rejected[i]
        for k in alone:
            a, b = alone[k][0], together[k][i]
            if k == "item":
                a, b = a[:n], b[:n]
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_classifier_learns_to_tell_local_from_outside_histories():
    rng = np.random.default_rng(0)
    cats = np.arange(40) // 10                                          # 4 categories
    local = Block(rng.integers(0, 10, 60), np.ones(60, np.int8), rng.integers(0, 10, (60, 5)).astype(np.int32))
    other = Block(rng.integers(30, 40, 60), np.zeros(60, np.int8), rng.integers(30, 40, (60, 5)).astype(np.int32))
    rows = np.arange(40)
    x = inputs(Block.concat([local, other], 5), rows, cats)
    x["label"] = np.r_[np.ones(60), np.zeros(60)].astype(np.float32)
    data, _ = pad_stack([x])
    steps = schedule([120], 16, [np.random.default_rng(0)], epochs=5)
    p = adam_fit(stack([init_classifier(4, 3, (8,), seed=0)]), classifier_logits, data, steps, 0.05)
    prob = torch.sigmoid(torch.func.vmap(classifier_logits)(p, {k: data[k] for k in ("hcat", "hmask")}))[0]
    assert float(prob[:60].min()) > 0.8 and float(prob[60:].max()) < 0.2


def test_the_attention_equals_din_s_concatenated_form():
    from fedrec.coda.model import _run_mlp, attention, layers

    p = init_ctr(50, 5, 4, (8, 3), (8,), seed=0)
    gen = torch.Generator().manual_seed(0)
    h, t = torch.randn(7, 6, 8, generator=gen), torch.randn(7, 8, generator=gen)
    tt = t.unsqueeze(1).expand_as(h)
    want = _run_mlp(p, "att", torch.cat([h, tt, h - tt, h * tt], -1), layers(p, "att"))
    torch.testing.assert_close(attention(p, h, t), want, rtol=1e-5, atol=1e-6)


def test_chunked_scoring_equals_scoring_every_sample_at_once():
    from fedrec.coda.train import ctr_scores, ctr_scores_chunked

    cases = [device_case(s) for s in range(3)]
    full = init_ctr(30, 4, 3, (4,), (4,), seed=0)
    T = max(len(r) for r, _, _ in cases)
    params = stack([{**full, "item": full["item"][:T]} for _ in cases])
    per = [t for _, t, _ in cases]
    x, _ = pad_stack(per)
    whole = ctr_scores(params, x).numpy()
    got = ctr_scores_chunked(params, per, chunk=7)
    for i, t in enumerate(per):
        np.testing.assert_allclose(got[i], whole[i, :len(t["item"])], rtol=1e-5, atol=1e-6)
