"""Attackers: seeded population, hand-computed crafting, same payload format as benign devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clients.attacks import crafting as cr
from clients.attacks.population import (
    device_key,
    fake_profile,
    malicious_devices,
    n_malicious,
    target_items,
)
from fedrec.federated import DeviceData
from fedrec.payload import SparseRows, add_sparse, get_sparse
from fedrec.protocol import EVALUATE, FIT
from fedrec.threat_config import ATTACKS
from tests.clients.threat_cases import build, run_round


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


# ---------------------------------------------------------------- population


@pytest.mark.parametrize("n,fraction,expected", [(1000, 0.001, 1), (1000, 0.01, 10),
                                                 (1000, 0.05, 50), (30, 0.0, 0), (30, 0.001, 1)])
def test_malicious_count_is_exact(n: int, fraction: float, expected: int) -> None:
    assert n_malicious(n, fraction) == expected
    assert len(malicious_devices(n, fraction, seed=0)) == expected


def test_malicious_set_depends_on_seed_and_id_only_and_nests() -> None:
    small, big = malicious_devices(500, 0.01, 3), malicious_devices(500, 0.05, 3)
    assert set(small) <= set(big) and np.array_equal(small, np.sort(small))
    keys = np.array([device_key(3, d) for d in range(500)])
    assert set(small) == set(np.argsort(keys)[:5])  # the 5 smallest per-device keys
    assert not np.array_equal(malicious_devices(500, 0.05, 4), big)


def test_targets_come_from_the_less_popular_half_of_seen_items() -> None:
    pop = np.array([5, 0, 1, 2, 9, 3, 1, 7])  # seen ascending: 2, 6, 3 | 5, 0, 7, 4
    picks = {tuple(target_items(pop, 2, s)) for s in range(20)}
    assert all(set(p) <= {2, 3, 6} and len(set(p)) == 2 and list(p) == sorted(p) for p in picks)
    assert len(picks) > 1 and target_items(pop, 2, 7).dtype == np.int64
    np.testing.assert_array_equal(target_items(pop, 2, 7), target_items(pop, 2, 7))


def test_fake_profile_is_targets_plus_filler_of_real_size() -> None:
    real = DeviceData(4, np.array([1, 1, 2, 9]), 3, 5, np.array([7, 8]))
    fake = fake_profile(real, np.array([0]), np.arange(20, 40), filler=0, seed=1)
    assert fake.train_items[0] == 0 and len(fake.train_items) == 1 + 3  # 3 unique real items
    assert set(fake.train_items[1:]) <= set(range(20, 40))
    assert (fake.valid_item, fake.test_item) == (-1, -1)
    assert len(fake_profile(real, np.array([0]), np.arange(20, 40), filler=6, seed=1).train_items) == 7


# ---------------------------------------------------------------- crafting, by hand


def test_set_rows_replaces_and_inserts_keeping_sorted_indices_and_dtype() -> None:
    rows = SparseRows(np.array([1, 4, 6]), np.array([[1.0], [4.0], [6.0]], np.float32))
    out = cr.set_rows(rows, np.array([4, 2]), np.array([[40.0], [20.0]]))
    np.testing.assert_array_equal(out.indices, [1, 2, 4, 6])
    np.testing.assert_array_equal(out.values[:, 0], [1, 20, 40, 6])
    assert out.values.dtype == np.float32 and out.indices.dtype == np.int64


def test_alignment_moves_target_onto_popular_centroid() -> None:
    table = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    d = cr.alignment_deltas(table, np.array([0, 3]), np.array([1, 2]))
    np.testing.assert_allclose(d, [[1.0, 1.0], [-2.0, 0.0]])
    np.testing.assert_allclose(cr.alignment_deltas(np.array([1.0, 3.0, 5.0]), np.array([0]),
                                                    np.array([1, 2])), [[3.0]])  # bias table


def test_promotion_weights_users_by_how_far_the_target_is_from_their_top_k() -> None:
    table = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    proxies = np.array([[1.0, 0.0], [0.0, 2.0]])
    d = cr.promotion_deltas_each(table, proxies, np.array([2]), k=1)
    # user 0: kth score 1, target 0 -> weight sigmoid(1); user 1: kth 2 -> sigmoid(2)
    s1, s2 = 1 / (1 + np.exp(-1.0)), 1 / (1 + np.exp(-2.0))
    np.testing.assert_allclose(d[:, 0], [[s1, 0.0], [0.0, 2 * s2]])
    np.testing.assert_allclose(cr.promotion_deltas(table, proxies, np.array([2]), k=1),
                               [[s1 / 2, s2]])
    bias = cr.promotion_deltas_each(np.array([0.5, -1.0, 0.0]), proxies, np.array([1]), k=1)
    np.testing.assert_allclose(bias[:, 0, 0], [1 / (1 + np.exp(-1.5))] * 2)  # p = 1 for biases


def test_user_proxies_score_the_known_positives_highest() -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(40, 6))
    pos = [np.array([3, 7, 11]), np.array([20, 21])]
    p = cr.fit_user_proxies(table, pos)
    scores = p @ table.T  # [2, 40]
    for u, items in enumerate(pos):
        assert scores[u, items].min() > np.median(np.delete(scores[u], items))


def test_scale_and_noise_keep_keys_dtypes_and_indices() -> None:
    up: dict[str, np.ndarray] = {"w": np.ones((2, 2), np.float32)}
    add_sparse(up, "t", SparseRows(np.array([3, 5]), np.ones((2, 3), np.float32)))
    flipped = cr.scale_upload(up, -2.0)
    np.testing.assert_array_equal(flipped["t.val"], -2 * np.ones((2, 3)))
    np.testing.assert_array_equal(flipped["t.idx"], [3, 5])
    noisy = cr.noise_upload(up, 0.5, np.random.default_rng(0))
    for out in (flipped, noisy):
        assert {k: (v.dtype, v.shape) for k, v in out.items()} == \
               {k: (v.dtype, v.shape) for k, v in up.items()}
    assert not np.array_equal(noisy["w"], up["w"]) and np.array_equal(noisy["t.idx"], up["t.idx"])


# ---------------------------------------------------------------- in a real round


def _format(upload: dict[str, np.ndarray]) -> dict[str, tuple]:
    """Keys, dtypes and every dimension but the number of rows."""
    return {k: (v.dtype, v.shape[1:]) for k, v in upload.items()}


CASES = [("fedmf", a) for a in ATTACKS if a != "none"] + \
    [("fedncf", a) for a in ("pipattack", "psmu", "noise")]  # NeuMF: two tables + dense layers


@pytest.mark.parametrize("strategy,attack", CASES)
def test_malicious_uploads_have_the_benign_payload_format(tmp_path, strategy: str, attack: str) -> None:
    _, st, logic = build(tmp_path, strategy=strategy, attack=attack, attack_fraction=0.1,
                         attack_scale=5.0)
    mal = logic.chain.attack.malicious
    replies = run_round(st, logic, 1, FIT, {})
    benign = [r for r in replies if r.device_id not in mal]
    bad = [r for r in replies if r.device_id in mal]
    assert len(bad) == 3 and all(r.status == "ok" for r in replies)
    assert all(_format(r.upload) == _format(benign[0].upload) for r in replies)
    for r in bad:
        for name in logic.sparse_tables:
            idx = get_sparse(r.upload, name).indices
            assert np.array_equal(idx, np.unique(idx)) and 0 <= idx.min() and idx.max() < 60
            if attack not in ("noise", "signflip"):
                assert set(logic.chain.attack.targets) <= set(idx)


def test_benign_devices_are_untouched_by_the_attack(tmp_path) -> None:
    _, st, clean = build(tmp_path / "a")
    _, _, attacked = build(tmp_path / "b", attack="pipattack", attack_fraction=0.1)
    mal = attacked.chain.attack.malicious
    a, b = run_round(st, clean, 1, FIT, {}), run_round(st, attacked, 1, FIT, {})
    for ra, rb in zip(a, b, strict=True):
        same = all(np.array_equal(ra.upload[k], rb.upload[k]) for k in ra.upload)
        assert same == (ra.device_id not in mal)


def test_evaluation_reports_exposure_for_benign_devices_only(tmp_path) -> None:
    _, st, logic = build(tmp_path, attack="fake-random", attack_fraction=0.1)
    states: dict = {}
    run_round(st, logic, 1, FIT, states)
    replies = run_round(st, logic, 1, EVALUATE, states)
    mal = logic.chain.attack.malicious
    assert all(r.metrics == {} for r in replies if r.device_id in mal)
    benign = [r for r in replies if r.device_id not in mal]
    targets = logic.chain.attack.targets
    for r in benign:  # a device that trained on every target is not eligible for exposure
        eligible = not np.isin(targets, logic.fed.device(r.device_id).train_items).all()
        assert ({"er@5", "er@10"} <= set(r.metrics)) == eligible and "test_hr@10" in r.metrics
        assert not eligible or r.metrics["er@5"] <= r.metrics["er@10"]
    assert sum("er@10" in r.metrics for r in benign) >= 20
