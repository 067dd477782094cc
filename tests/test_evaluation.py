"""fedrec.evaluation by hand: candidate and full-ranking metrics (ties, K beyond the candidates,
Recall), top-K lists, AUC / macro-AUC / GAUC / logloss, and the leave-one-out protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrec import evaluation as ev
from fedrec import metrics
from fedrec.federated import DeviceData

L2 = math.log2


# --------------------------------------------------------------------------- ranking
def test_candidate_metrics_by_hand_with_ties_against_the_target() -> None:
    scores = np.array([[0.9, 0.1, 0.5, 0.3],     # target first: rank 0
                       [0.5, 0.5, 0.9, 0.1],     # one tie + one above: rank 2
                       [0.0, 0.0, 0.0, 0.0]])    # all tied: rank 3
    out = ev.candidate_metrics(scores, ks=(1, 3))
    np.testing.assert_array_equal(out["HR@1"], [1, 0, 0])
    np.testing.assert_array_equal(out["HR@3"], [1, 1, 0])
    np.testing.assert_allclose(out["NDCG@3"], [1, 1 / L2(4), 0])
    np.testing.assert_allclose(out["MRR@3"], [1, 1 / 3, 0])


def test_k_beyond_the_candidates_makes_every_hit() -> None:
    out = ev.candidate_metrics(np.array([[0.0, 1.0, 2.0]]), ks=(10,))
    assert out["HR@10"][0] == 1.0 and out["MRR@10"][0] == pytest.approx(1 / 3)


def test_full_ranking_masks_training_items_but_never_the_target() -> None:
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0],
                       [5.0, 4.0, 3.0, 2.0, 1.0]])
    # row 0: items 0, 1 trained -> target 3 has only item 2 above: rank 1
    # row 1: the target (0) is also in the exclude list: kept, rank 0
    out = ev.full_ranking_metrics(scores, [3, 0], [np.array([0, 1]), np.array([0, 2])], ks=(1, 2))
    np.testing.assert_array_equal(out["HR@1"], [0, 1])
    np.testing.assert_array_equal(out["HR@2"], [1, 1])
    assert "Recall@2" not in out


def test_full_ranking_recall_over_several_held_out_items() -> None:
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]])
    out = ev.full_ranking_metrics(scores, [2], None, ks=(2, 3), relevant=[np.array([0, 2, 4])])
    np.testing.assert_allclose(out["Recall@2"], [1 / 3])      # top-2 = {0, 1}
    np.testing.assert_allclose(out["Recall@3"], [2 / 3])      # top-3 = {0, 1, 2}


def test_ranks_from_topk_first_position_and_absent_never_hits() -> None:
    top = np.array([[4, 7, 7, -1], [1, 2, 3, 4], [9, 9, 9, 9]])
    ranks = ev.ranks_from_topk(top, np.array([7, 5, 9]))
    np.testing.assert_array_equal(ranks, [1, np.inf, 0])
    assert metrics.hit_rate(ranks, 100).tolist() == [1, 0, 1]       # k beyond the list
    np.testing.assert_allclose(metrics.mrr(ranks, 4), [0.5, 0, 1])


# --------------------------------------------------------------------------- labelled impressions
USERS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2])
SCORES = np.array([0.9, 0.2, 0.4, 0.4, 0.1, 0.8, 0.3, 0.5, 0.6])
LABELS = np.array([1, 0, 1, 0, 1, 0, 0, 1, 1])       # user 2 has one class only


def test_per_user_auc_by_hand_with_ties_and_a_one_class_user() -> None:
    auc, n = ev.per_user_auc(USERS, SCORES, LABELS)
    # user 0: pos {.9, .4} vs neg {.2, .4}: pairs 1, 1, 1, 0.5 -> 3.5 / 4
    # user 1: pos {.1} vs neg {.8, .3}: 0 / 2
    np.testing.assert_allclose(auc[:2], [0.875, 0.0])
    assert math.isnan(auc[2]) and n.tolist() == [4, 3, 2]
    for u in (0, 1):   # the global Mann-Whitney AUC of one user's impressions
        m = USERS == u
        assert auc[u] == pytest.approx(metrics.auc(SCORES[m & (LABELS == 1)], SCORES[m & (LABELS == 0)]))


def test_macro_auc_and_gauc_weigh_users_differently() -> None:
    assert ev.macro_auc(USERS, SCORES, LABELS) == pytest.approx((0.875 + 0.0) / 2)
    assert ev.gauc(USERS, SCORES, LABELS) == pytest.approx((4 * 0.875 + 3 * 0.0) / 7)
    assert math.isnan(ev.gauc(np.array([0, 0]), np.array([0.1, 0.2]), np.array([1, 1])))


def test_per_user_auc_does_not_depend_on_row_order_or_user_ids() -> None:
    perm = np.random.default_rng(0).permutation(len(USERS))
    a, _ = ev.per_user_auc(USERS * 7 + 3, SCORES, LABELS)
    b, _ = ev.per_user_auc((USERS * 7 + 3)[perm], SCORES[perm], LABELS[perm])
    np.testing.assert_array_equal(a, b)


def test_a_nan_score_makes_that_users_auc_nan() -> None:
    s = SCORES.copy()
    s[5] = np.nan
    auc, _ = ev.per_user_auc(USERS, s, LABELS)
    assert auc[0] == 0.875 and math.isnan(auc[1])


def test_logloss_by_hand_and_without_overflow() -> None:
    z = np.array([0.0, 2.0, -1.0])
    y = np.array([1, 0, 0])
    p = 1 / (1 + np.exp(-z))
    want = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert ev.logloss(y, z) == pytest.approx(want)
    assert ev.logloss(np.array([1, 0]), np.array([800.0, -800.0])) == 0.0
    assert ev.logloss(np.array([0]), np.array([800.0])) == pytest.approx(800.0)


# --------------------------------------------------------------------------- leave-one-out
def device(valid: int, test: int, negatives=None, valid_negatives=None) -> DeviceData:
    return DeviceData(0, np.array([0, 1, 1]), valid, test, negatives, valid_negatives)


def test_sampled_candidates_target_first_and_independent_validation_negatives() -> None:
    seen = []

    def score(items: np.ndarray) -> np.ndarray:
        seen.append(items)
        return -items.astype(float)                   # lower id scores higher

    d = device(3, 5, negatives=np.array([2, 6]), valid_negatives=np.array([4, 7]))
    (out,) = ev.leave_one_out_metrics([d], score, ks=(1, 2))
    np.testing.assert_array_equal(seen[0], [[[3, 4, 7], [5, 2, 6]]])
    assert out == {"valid_hr@1": 1.0, "valid_ndcg@1": 1.0, "valid_mrr@1": 1.0,
                   "valid_hr@2": 1.0, "valid_ndcg@2": 1.0, "valid_mrr@2": 1.0,
                   "test_hr@1": 0.0, "test_ndcg@1": 0.0, "test_mrr@1": 0.0,
                   "test_hr@2": 1.0, "test_ndcg@2": 1 / L2(3), "test_mrr@2": 0.5}


def test_without_validation_negatives_validation_uses_the_test_ones() -> None:
    seen: list[np.ndarray] = []

    def score(items: np.ndarray) -> np.ndarray:
        seen.append(items)
        return np.zeros(items.shape)

    ev.leave_one_out_metrics([device(3, 5, negatives=np.array([2, 6]))], score, ks=(1,))
    np.testing.assert_array_equal(seen[0], [[[3, 2, 6], [5, 2, 6]]])


def test_full_ranking_excludes_training_and_for_test_the_validation_item() -> None:
    # scores by item: 0 and 1 are trained; item 3 (valid) outranks item 4 (test)
    full = np.array([[9.0, 8.0, 1.0, 7.0, 6.0, 0.0]])
    d = device(3, 4)
    (out,) = ev.leave_one_out_metrics([d], lambda items: full, ks=(1,))
    assert out["valid_hr@1"] == 1.0                   # 0, 1 masked
    assert out["test_hr@1"] == 1.0                    # 0, 1 and the validation item masked


def test_a_split_without_a_held_out_item_is_left_out() -> None:
    d = device(-1, 2, negatives=np.array([4, 5]), valid_negatives=np.array([4, 5]))
    (out,) = ev.leave_one_out_metrics([d], lambda items: np.zeros(items.shape), ks=(10,))
    assert sorted(out) == ["test_hr@10", "test_mrr@10", "test_ndcg@10"]
    assert ev.leave_one_out_metrics([], lambda items: items) == []


def test_metric_key_and_scored_model_names() -> None:
    assert ev.metric_key("test", "NDCG@10") == "test_ndcg@10"
    assert ev.SCORED_MODELS == ("global", "personalised", "stale")
