"""Hand-computed checks of every metric, the tie rule and both evaluation protocols."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from fedrec import metrics as m
from fedrec.errors import ConfigError
from fedrec.evaluation import evaluate_full_ranking


# --------------------------------------------------------------------------- rank metrics
def test_hit_rate_ndcg_mrr_hand_computed():
    ranks = np.array([0, 1, 4, 5, 20])
    np.testing.assert_array_equal(m.hit_rate(ranks, 5), [1, 1, 1, 0, 0])
    np.testing.assert_allclose(m.ndcg(ranks, 5), [1.0, 1 / math.log2(3), 1 / math.log2(6), 0, 0])
    np.testing.assert_allclose(m.mrr(ranks, 5), [1.0, 0.5, 0.2, 0, 0])
    assert m.mrr(ranks, 5).dtype == np.float64


def test_rank_metrics_keys_and_summarise_ignores_nan():
    out = m.rank_metrics(np.array([0, 3]), ks=(1, 5))
    assert sorted(out) == ["HR@1", "HR@5", "MRR@1", "MRR@5", "NDCG@1", "NDCG@5"]
    means = m.summarise(out)
    assert means["HR@1"] == 0.5 and means["MRR@5"] == pytest.approx((1 + 0.25) / 2)
    assert m.summarise({"r": np.array([1.0, np.nan, 0.0])}) == {"r": 0.5}
    assert math.isnan(m.summarise({"r": np.array([np.nan])})["r"])


def test_ranks_from_scores_pessimistic_ties():
    scores = np.array([[0.9, 0.5, 0.5, 0.1],   # target col 1 ties with col 2 -> rank 2
                       [0.2, 0.2, 0.2, 0.2],   # constant model: worst rank
                       [0.1, 0.3, 0.2, 0.9]])  # target col 3 strictly best
    np.testing.assert_array_equal(m.ranks_from_scores(scores, [1, 0, 3]), [2, 3, 0])
    np.testing.assert_array_equal(m.ranks_from_scores(scores, 0), [0, 3, 3])


def test_ranks_from_scores_nan_counts_against_target():
    scores = np.array([[np.nan, 1.0, 0.0], [2.0, np.nan, 0.0]])
    np.testing.assert_array_equal(m.ranks_from_scores(scores, [1, 1]), [1, 2])


# --------------------------------------------------------------------------- set metrics
def test_recall_at_k_list_and_csr_agree():
    topk = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    rel = [np.array([2, 9, 3, 3]), np.array([0]), np.array([], dtype=np.int64)]
    got = m.recall_at_k(topk, rel)
    np.testing.assert_allclose(got[:2], [2 / 3, 0.0])  # {2, 9, 3}: duplicate 3 counted once
    assert math.isnan(got[2])
    csr = sp.csr_matrix(([1, 1, 1, 0], ([0, 0, 1, 2], [2, 9, 0, 7])), shape=(3, 10))
    np.testing.assert_allclose(m.recall_at_k(topk, csr)[:2], [0.5, 0.0])
    # row 2's only stored entry is an explicit 0: no relevant item
    assert math.isnan(m.recall_at_k(topk, csr)[2])


def test_auc_ties_half_and_matches_brute_force():
    assert m.auc([1, 2], [0, 2]) == pytest.approx(2.5 / 4)
    assert m.auc([1, 1], [1, 1]) == 0.5
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 30), rng.integers(0, 5, 40)
    brute = ((pos[:, None] > neg) + 0.5 * (pos[:, None] == neg)).mean()
    assert m.auc(pos, neg) == pytest.approx(brute)
    with pytest.raises(ConfigError):
        m.auc([], [1.0])


def test_user_auc_single_and_multi_positive():
    np.testing.assert_allclose(m.user_auc(np.array([1.0, 2.0]), np.array([[0, 1], [3, 2]])),
                               [0.75, 0.25])
    pos = np.array([[3.0, 0.0]])  # pairs vs [1, 2]: 3 beats both, 0 beats none -> 2/4
    np.testing.assert_allclose(m.user_auc(pos, np.array([[1.0, 2.0]])), [0.5])


def test_exposure_ratio_follows_papers_definition():
    topk = np.array([[1, 2], [3, 4], [1, 5]])
    interacted = [np.array([5]), np.array([], dtype=np.int64), np.array([0])]
    np.testing.assert_allclose(m.exposure_per_target(topk, [1, 5], interacted), [2 / 3, 1 / 2])
    np.testing.assert_allclose(m.exposure_per_target(topk, [1, 5]), [2 / 3, 1 / 3])
    assert m.exposure_ratio_at_k(topk, [1, 5], interacted) == pytest.approx((2 / 3 + 1 / 2) / 2)
    np.testing.assert_array_equal(m.any_target_exposure(topk, [4, 5]), [0, 1, 1])


# --------------------------------------------------------------------------- full ranking
def test_topk_items_order_ties_nan_and_exclude():
    s = np.array([[3.0, 1.0, 2.0, 2.0, np.nan], [1.0, 1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(m.topk_items(s, 3), [[0, 2, 3], [0, 1, 2]])
    ex = sp.csr_matrix(([1, 1], ([0, 1], [2, 0])), shape=(2, 5))
    np.testing.assert_array_equal(m.topk_items(s, 3, ex), [[0, 3, 1], [1, 2, 3]])
    assert m.topk_items(s, 9).shape == (2, 5)  # k capped at n_items
    assert np.isnan(s[0, 4])  # input untouched


def test_full_ranking_excludes_training_items_but_not_target():
    s = np.array([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]])
    ex = sp.csr_matrix(([1, 1, 1], ([0, 0, 1], [1, 2, 0])), shape=(2, 4))
    # row 0: item 1 (0.9) excluded -> target 2 (0.5) is beaten only by item 3
    # row 1: target 0 is excluded in training but must be kept -> rank 0
    np.testing.assert_array_equal(m.full_ranking_ranks(s, [2, 0], ex), [1, 0])
    np.testing.assert_array_equal(m.full_ranking_ranks(s, [2, 0]), [2, 0])
    assert s[0, 1] == 0.9  # caller's array not modified


def _loop_reference(scores, targets, train, ks):
    """Per-user Python loop: the obviously-correct version of evaluate_full_ranking."""
    out = {f"{n}@{k}": [] for n in ("HR", "NDCG", "MRR", "Recall") for k in ks}
    for u, t in enumerate(targets):
        s = scores[u].copy()
        s[[i for i in train[u] if i != t]] = -np.inf
        rank = sum(1 for j in range(len(s)) if j != t and s[j] >= s[t])
        order = sorted(range(len(s)), key=lambda j: (-s[j], j))
        for k in ks:
            out[f"HR@{k}"].append(float(rank < k))
            out[f"NDCG@{k}"].append(1 / math.log2(rank + 2) if rank < k else 0.0)
            out[f"MRR@{k}"].append(1 / (rank + 1) if rank < k else 0.0)
            out[f"Recall@{k}"].append(float(t in order[:k]))
    return {key: float(np.mean(v)) for key, v in out.items()}


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_evaluate_full_ranking_matches_loop_and_chunking(chunk):
    rng = np.random.default_rng(3)
    n_users, n_items = 23, 40
    scores = np.round(rng.random((n_users, n_items)), 1)  # rounding creates ties
    train = [rng.choice(n_items, size=rng.integers(0, 10), replace=False) for _ in range(n_users)]
    targets = rng.integers(0, n_items, n_users)
    ex = m.as_csr(train, n_users, n_items)
    got = evaluate_full_ranking(lambda us: scores[us], np.arange(n_users), targets, ex,
                                  ks=(5, 10), chunk=chunk)
    want = _loop_reference(scores, targets, train, (5, 10))
    assert got.pop("n_users") == n_users
    assert got == pytest.approx(want)


def test_evaluate_full_ranking_with_held_out_sets():
    scores = np.array([[0.9, 0.8, 0.1, 0.0], [0.0, 0.1, 0.2, 0.3]])
    rel = [np.array([0, 2]), np.array([3])]
    got = evaluate_full_ranking(lambda us: scores[us], np.array([0, 1]), np.array([0, 3]),
                                  None, ks=(1, 2), relevant=rel)
    assert got["Recall@1"] == pytest.approx((0.5 + 1.0) / 2)
    assert got["HR@1"] == 1.0


# --------------------------------------------------------------------------- sampled protocol
def _positives(n_users=50, n_items=300, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.choice(n_items, size=rng.integers(1, 200), replace=False) for _ in range(n_users)]


def test_sample_negatives_never_positive_distinct_and_shape():
    pos = _positives()
    neg = m.sample_negatives(300, pos, n_neg=99, seed=1)
    assert neg.shape == (50, 99) and neg.dtype == np.int64
    for u, row in enumerate(neg):
        assert len(set(row)) == 99
        assert not set(row) & set(pos[u])
        assert row.min() >= 0 and row.max() < 300


def test_sample_negatives_reproducible_and_seed_dependent():
    pos = _positives()
    a = m.sample_negatives(300, pos, n_neg=20, seed=7)
    np.testing.assert_array_equal(a, m.sample_negatives(300, pos, n_neg=20, seed=7))
    assert not np.array_equal(a, m.sample_negatives(300, pos, n_neg=20, seed=8))
    csr = m.as_csr(pos, len(pos), 300)
    np.testing.assert_array_equal(a, m.sample_negatives(300, csr, n_neg=20, seed=7))


def test_sample_negatives_fallback_path_is_exact():
    pos = [np.arange(5), np.array([9])]
    neg = m.sample_negatives(10, pos, n_neg=5, seed=0, max_rounds=0)  # fallback only
    assert set(neg[0]) == {5, 6, 7, 8, 9}
    assert len(set(neg[1])) == 5 and 9 not in neg[1]
    tight = m.sample_negatives(10, pos, n_neg=5, seed=0)  # rejection must also find all five
    assert set(tight[0]) == {5, 6, 7, 8, 9}


def test_sample_negatives_infeasible_is_config_error():
    with pytest.raises(ConfigError, match="row 1 has only 3 non-positive"):
        m.sample_negatives(10, [np.array([0]), np.arange(7)], n_neg=4)


def test_sampled_ranks_target_first_and_pessimistic():
    pos = np.array([0.5, 0.5, 0.9])
    neg = np.array([[0.1, 0.6, 0.2], [0.5, 0.5, 0.1], [0.1, 0.2, 0.3]])
    np.testing.assert_array_equal(m.sampled_ranks(pos, neg), [1, 2, 0])
