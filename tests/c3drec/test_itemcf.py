"""Item-CF (C3DRec Sec. 3.2) on a 4-user x 4-item purchase matrix computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from fedrec.c3drec.itemcf import (
    binary_matrix,
    candidate_count,
    candidate_sets,
    cf_scores,
    item_similarity,
    knn,
)
from fedrec.errors import ConfigError

# u0 bought i0,i1; u1 i0,i2; u2 i1; u3 nothing. Item 3 was never bought.
X = binary_matrix(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 0, 2, 1, 1]), 4, 4)
R = 1 / np.sqrt(2)
# cosine of columns i0=(1,1,0,0), i1=(1,0,1,0), i2=(0,1,0,0), i3=0
SIM = np.array([[1, .5, R, 0], [.5, 1, 0, 0], [R, 0, 1, 0], [0, 0, 0, 0]])
DEN = np.array([1.5 + R, 1.5, 1 + R, 0])
P = np.array([
    [1.5 / DEN[0], 1.5 / 1.5, R / DEN[2], 0],
    [(1 + R) / DEN[0], .5 / 1.5, (1 + R) / DEN[2], 0],
    [.5 / DEN[0], 1 / 1.5, 0, 0],
    [0, 0, 0, 0],
])


def test_binary_matrix_counts_duplicates_once() -> None:
    assert X.nnz == 5 and X[2, 1] == 1.0


def test_cosine_similarity_by_hand() -> None:
    np.testing.assert_allclose(item_similarity(X).toarray(), SIM, atol=1e-12)


def test_p_km_by_hand_including_the_item_itself() -> None:
    np.testing.assert_allclose(cf_scores(X, item_similarity(X)), P, atol=1e-12)
    assert P[1, 2] == pytest.approx(1.0)  # item 2's only neighbours are bought by u1


def test_top_proportion_ties_by_popularity_then_id() -> None:
    sim = item_similarity(X)
    got = candidate_sets(X, sim, proportion=0.5)
    assert [c.tolist() for c in got] == [[1, 0], [2, 0], [1, 0], [0, 1]]
    # u2: p = (.23, .67, 0, 0): the third slot goes to i2 (1 purchase) before i3 (none)
    assert candidate_sets(X, sim, proportion=0.75)[2].tolist() == [1, 0, 2]


def test_threshold_rule_is_strict_and_can_be_empty() -> None:
    got = candidate_sets(X, item_similarity(X), threshold=0.5, chunk=1)
    assert [c.tolist() for c in got] == [[1, 0], [2, 0], [1], []]
    assert candidate_sets(X, item_similarity(X), threshold=1.0)[1].tolist() == []


def test_knn_keeps_the_k_largest_per_row() -> None:
    kept = knn(item_similarity(X), 2).toarray()
    np.testing.assert_allclose(kept[0], [1, 0, R, 0])   # 0.5 < 1/sqrt(2): dropped
    np.testing.assert_allclose(kept[1], SIM[1])
    assert knn(item_similarity(X), 0).nnz == item_similarity(X).nnz


def test_candidate_count_and_bad_proportion() -> None:
    assert candidate_count(1000, 0.1) == 100 and candidate_count(7, 0.1) == 1
    with pytest.raises(ConfigError, match="proportion"):
        candidate_count(10, 0.0)


def test_chunking_does_not_change_the_sets() -> None:
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((30, 40)) < 0.1).astype(float))
    sim = item_similarity(x)
    a = candidate_sets(x, sim, 0.2, chunk=7)
    b = candidate_sets(x, sim, 0.2, chunk=1000)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
