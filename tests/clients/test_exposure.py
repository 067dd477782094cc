"""ER@K on devices: hand-computed ranks, pessimistic ties, eligibility, the papers' definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clients.device import EVALUATE, DeviceTask, device_rng
from clients.exposure import all_item_scores, target_exposure
from fedrec.metrics import exposure_ratio_at_k
from fedrec.models.base import Batch
from tests.clients.threat_cases import build, run_round


def test_exposure_by_hand_with_masked_training_items() -> None:
    scores = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    out = target_exposure(scores, [np.array([0]), np.array([], np.int64)], np.array([2, 3]), ks=(1, 2))
    # user 0 (item 0 masked): target 2 has rank 1, target 3 rank 2; user 1: ranks 1 and 0
    assert out == [{"er@1": 0.0, "er@2": 0.5}, {"er@1": 0.5, "er@2": 1.0}]


def test_ties_count_against_the_target_and_trained_targets_are_not_eligible() -> None:
    out = target_exposure(np.ones((2, 3)), [np.array([], np.int64), np.array([0])],
                          np.array([0]), ks=(2, 3))
    assert out == [{"er@2": 0.0, "er@3": 1.0}, {}]


def test_device_mean_equals_the_papers_er_when_everyone_is_eligible() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(7, 12))
    trained = [rng.choice(10, size=3, replace=False) for _ in range(7)]  # targets 10, 11 never
    targets = np.array([10, 11])
    per_device = target_exposure(scores, trained, targets, ks=(4,))
    masked = scores.copy()
    for u, items in enumerate(trained):
        masked[u, items] = -np.inf
    topk = np.argsort(-masked, axis=1)[:, :4]
    assert np.mean([d["er@4"] for d in per_device]) == pytest.approx(exposure_ratio_at_k(topk, targets))


def test_vectorised_fedmf_scores_equal_the_model_score_all(tmp_path) -> None:
    torch.set_num_threads(1)
    _, st, logic = build(tmp_path, attack="fake-random", attack_fraction=0.0)
    states: dict = {}
    run_round(st, logic, 1, "fit", states)
    base = logic.base
    tasks = [DeviceTask(d, 1, EVALUATE, st.eval_broadcast(1), {}, states.get(d), {},
                        device_rng(0, 1, d, EVALUATE)) for d in range(5)]
    fast = all_item_scores(base, tasks)
    for u, t in enumerate(tasks):
        base.load(t)
        with torch.no_grad():
            ref = base.model.score_all(Batch(users=torch.zeros(1, dtype=torch.long)))[0].numpy()
        np.testing.assert_allclose(fast[u], ref, rtol=1e-5, atol=1e-6)
