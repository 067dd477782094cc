"""Algorithm 1: user vectors, K nearest OTHER users (faiss = brute force), matched sets."""

from __future__ import annotations

import numpy as np

from fedrec.coda.matching import (
    category_vectors,
    knn_users,
    matched_batches,
    random_users,
    recent_index,
    zscore,
)


def test_category_vectors_are_each_users_mean_one_hot_category():
    users, vec = category_vectors(np.array([3, 3, 3, 5]), np.array([0, 0, 2, 1]), 6, 3)
    assert users.tolist() == [3, 5]
    np.testing.assert_allclose(vec, [[2 / 3, 0, 1 / 3], [0, 1, 0]], rtol=1e-6)


def test_knn_equals_brute_force_and_never_returns_the_user_itself():
    rng = np.random.default_rng(0)
    x = zscore(rng.normal(size=(300, 12)).astype(np.float32))
    got = knn_users(x, 10)
    dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    want = np.argsort(dist, axis=1, kind="stable")[:, :10]
    assert (got != np.arange(300)[:, None]).all()
    # same neighbour sets (faiss and numpy may order exact ties differently)
    assert all(set(a) == set(b) for a, b in zip(got.tolist(), want.tolist(), strict=True))


def test_fewer_users_than_k_gives_every_other_user():
    x = np.eye(4, dtype=np.float32)
    got = knn_users(x, 100)
    assert got.shape == (4, 3) and all(sorted(r) == sorted(set(range(4)) - {i})
                                       for i, r in enumerate(got.tolist()))
    assert knn_users(x[:1], 5).shape == (1, 0)


def test_random_users_are_other_users():
    got = random_users(50, 10, 0, 3)
    assert got.shape == (50, 10) and (got != np.arange(50)[:, None]).all()
    assert all(len(set(r)) == 10 for r in got.tolist())


def test_matched_set_is_the_neighbours_recent_samples_shuffled():
    recent = np.arange(100, 130)
    owner = np.repeat([1, 2, 3], 10)
    index = recent_index(recent, owner)
    got = matched_batches(0, np.array([1, 3, 9]), index, np.random.default_rng(0), 7, 10, 12)
    ids = np.concatenate(got)
    assert sorted(ids.tolist()) == list(range(100, 110)) + list(range(120, 130))
    assert ids.tolist() != sorted(ids.tolist())                          # shuffled
    assert [len(b) for b in got] == [7, 7, 6]
