"""ER@K on devices: hand-computed ranks, pessimistic ties, eligibility, the papers' definition,
and the scores it ranks: each protocol's own ``score_many`` (vectorised FedMF = the model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrec.evaluation import exposure_at_k
from fedrec.metrics import exposure_ratio_at_k
from fedrec.models.base import Batch
from fedrec.protocol import EVALUATE, DeviceTask, device_rng
from tests.clients.threat_cases import build, run_round


def test_exposure_by_hand_with_masked_training_items() -> None:
    scores = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    out = exposure_at_k(scores, np.array([2, 3]), [np.array([0]), np.array([], np.int64)], ks=(1, 2))
    # user 0 (item 0 masked): target 2 has rank 1, target 3 rank 2; user 1: ranks 1 and 0
    np.testing.assert_array_equal(out["ER@1"], [0.0, 0.5])
    np.testing.assert_array_equal(out["ER@2"], [0.5, 1.0])


def test_ties_count_against_the_target_and_trained_targets_are_not_eligible() -> None:
    out = exposure_at_k(np.ones((2, 3)), np.array([0]), [np.array([], np.int64), np.array([0])],
                        ks=(2, 3))
    np.testing.assert_array_equal(out["ER@2"], [0.0, np.nan])   # user 1 trained the target
    np.testing.assert_array_equal(out["ER@3"], [1.0, np.nan])


def test_a_nan_score_gets_no_exposure() -> None:
    scores = np.array([[np.nan, 1.0, 0.0], [2.0, np.nan, 0.0]])
    out = exposure_at_k(scores, np.array([0]), ks=(1, 3))
    np.testing.assert_array_equal(out["ER@1"], [0.0, 0.0])          # NaN target; NaN rival
    np.testing.assert_array_equal(out["ER@3"], [1.0, 1.0])


def test_device_mean_equals_the_papers_er_when_everyone_is_eligible() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(7, 12))
    trained = [rng.choice(10, size=3, replace=False) for _ in range(7)]  # targets 10, 11 never
    targets = np.array([10, 11])
    per_device = exposure_at_k(scores, targets, trained, ks=(4,))["ER@4"]
    masked = scores.copy()
    for u, items in enumerate(trained):
        masked[u, items] = -np.inf
    topk = np.argsort(-masked, axis=1)[:, :4]
    assert per_device.mean() == pytest.approx(exposure_ratio_at_k(topk, targets))


def test_exposure_equals_the_per_device_loop_it_replaced() -> None:
    """The old clients/exposure.py ``target_exposure`` loop, on random scores with ties."""
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, size=(9, 40)).astype(np.float32)     # many ties
    trained = [rng.choice(40, size=rng.integers(0, 8), replace=False) for _ in range(9)]
    trained[4] = np.array([1, 5, 17])                                  # eligible for no target
    targets = np.array([1, 5, 17])
    got = exposure_at_k(scores, targets, trained, (5, 10))
    s = scores.astype(np.float64)
    for u, items in enumerate(trained):
        s[u, items] = -np.inf
        ok = targets[~np.isin(targets, items)]
        rank = (s[u][None, :] >= s[u, ok][:, None]).sum(axis=1) - 1
        old = {f"ER@{k}": float(np.mean(rank < k)) for k in (5, 10)} if len(ok) else {}
        assert {k: float(v[u]) for k, v in got.items() if not np.isnan(v[u])} == old


def test_vectorised_fedmf_scores_equal_the_model_score_all(tmp_path) -> None:
    torch.set_num_threads(1)
    _, st, logic = build(tmp_path, attack="fake-random", attack_fraction=0.0)
    states: dict = {}
    run_round(st, logic, 1, "fit", states)
    base = logic.base
    tasks = [DeviceTask(d, 1, EVALUATE, st.eval_broadcast(1), {}, states.get(d), {},
                        device_rng(0, 1, d, EVALUATE)) for d in range(5)]
    fast = base.score_many(tasks)
    for u, t in enumerate(tasks):
        base.load(t)
        with torch.no_grad():
            ref = base.model.score_all(Batch(users=torch.zeros(1, dtype=torch.long)))[0].numpy()
        np.testing.assert_allclose(fast[u], ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(base.score(t), ref)
