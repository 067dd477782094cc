"""Robust sparse aggregation: hand-computed outlier cases, loop references, Flower equivalence."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from flwr.server.strategy.aggregate import (
    aggregate_krum,
    aggregate_median,
    aggregate_trimmed_avg,
)
from scipy import stats

from fedrec.errors import ConfigError
from fedrec.payload import SparseRows
from strategies.robust import (
    _ranked_sort,
    coordinate_median,
    dense_krum,
    dense_median,
    dense_norm_bound,
    dense_trimmed_mean,
    drop_nonfinite,
    group_sorted,
    hics,
    krum,
    norm_bound,
    pairwise_sq_distances,
    stack_rows,
    trimmed_mean,
    upload_matrix,
)


def rows(idx: list[int], vals: list[list[float]]) -> SparseRows:
    return SparseRows(np.array(idx, dtype=np.int64), np.array(vals, dtype=np.float32))


# ---------------------------------------------------------------- hand-computed, with an outlier


def test_median_per_row_over_senders_suppresses_outlier() -> None:
    ups = [rows([0, 1], [[1, 2], [0, 0]]), rows([0], [[3, -1]]),
           rows([0, 1], [[100, 100], [2, 4]])]  # device 2 is the outlier on row 0
    delta, info = coordinate_median(3, ups)
    np.testing.assert_array_equal(delta, [[3, 2], [1, 2], [0, 0]])
    assert delta.dtype == np.float64 and info == {"n_rows_aggregated": 2}


def test_trimmed_mean_per_row_and_fallback_to_mean() -> None:
    ups = [rows([0, 1], [[1, 0], [1, 1]]), rows([0], [[2, 1]]),
           rows([1, 0], [[3, 3], [3, -5]]), rows([0], [[100, 50]])]
    delta, info = trimmed_mean(3, ups, beta=0.25)
    # row 0 (4 senders, cut 1 per side): x: 1 2 3 100 -> 2.5; y: -5 0 1 50 -> 0.5
    # row 1 (2 senders, cut floor(0.5) = 0): plain mean
    np.testing.assert_allclose(delta, [[2.5, 0.5], [2.0, 2.0], [0.0, 0.0]])
    assert info == {"trimmed_per_device": [1, 0, 1, 2], "untrimmed_rows": 1}


def test_norm_bound_clips_each_device_then_row_mean() -> None:
    ups = [rows([0], [[0.3, 0.4]]), rows([0, 1], [[0, 0.5], [0, 0.5]]), rows([1], [[30, 40]])]
    delta, info = norm_bound(3, ups, bound=1.0)
    # device 2 (norm 50) is scaled to (0.6, 0.8); the others are inside the bound
    np.testing.assert_allclose(delta, [[0.15, 0.45], [0.3, 0.65], [0, 0]], rtol=1e-6)
    assert info["clipped"] == [2]
    np.testing.assert_allclose(info["norms"], [0.5, np.sqrt(0.5), 50.0], rtol=1e-6)


def _krum_case() -> list[SparseRows]:
    # union-of-rows vectors: (1, 0) (1.2, 0) (0.9, 0.1) (1.1, 0) and the attacker (0, 10)
    return [rows([0], [[1.0]]), rows([0], [[1.2]]), rows([0, 1], [[0.9], [0.1]]),
            rows([0], [[1.1]]), rows([1], [[10.0]])]


def test_krum_scores_and_selection_by_hand() -> None:
    delta, info = krum(2, _krum_case(), num_malicious=1)
    # scores = sum of the 2 closest: .03 .05 .07 .02 199.82 -> device 3
    np.testing.assert_allclose(info["scores"], [0.03, 0.05, 0.07, 0.02, 199.82], atol=1e-6)
    assert info["selected"] == [3] and info["dropped"] == [0, 1, 2, 4]
    np.testing.assert_allclose(delta, [[1.1], [0.0]], rtol=1e-6)


def test_multi_krum_selected_row_mean() -> None:
    delta, info = krum(2, _krum_case(), num_malicious=1, to_keep=3)
    assert info["selected"] == [0, 1, 3] and info["dropped"] == [2, 4]
    np.testing.assert_allclose(delta, [[1.1], [0.0]], rtol=1e-6)
    delta, info = krum(2, _krum_case(), num_malicious=1, to_keep=4)
    np.testing.assert_allclose(delta, [[1.05], [0.1]], rtol=1e-6)  # row 1: device 2 alone


def test_hics_hand_computed() -> None:
    benign = [rows([0, 1], [[0.3, 0], [0, 0.3]]) for _ in range(4)]
    attacker = rows([2, 0], [[100, 0], [-100, 0]])  # pushes unpopular row 2, pulls row 0
    delta, info = hics(3, [*benign, attacker], row_bound=0.5, agg_bound=0.4, keep_fraction=0.6)
    # stage 1: attacker rows -> (0.5, 0), (-0.5, 0); sums: row0 (0.7, 0), row1 (0, 1.2),
    # row2 (0.5, 0); means (0.14, 0), (0, 0.3), (0.5, 0) -> row 2 clipped to 0.4;
    # keep ceil(0.6 * 3) = 2 rows by support 0.7, 1.2, 0.5 -> rows 1, 0
    np.testing.assert_allclose(delta, [[0.14, 0], [0, 0.3], [0, 0]], rtol=1e-6, atol=1e-12)
    assert info == {"row_clipped_per_device": [0, 0, 0, 0, 2], "agg_clipped_rows": 1,
                    "rows_kept": 2, "rows_dropped": 1}


def test_hics_keep_all_rows_applies_both_clips() -> None:
    ups = [rows([0], [[3.0, 4.0]]), rows([0, 1], [[0.0, 1.0], [0.0, 0.2]])]
    delta, _ = hics(2, ups, row_bound=1.0, agg_bound=0.5)
    # row 0: ((0.6, 0.8) + (0, 1)) / 2 = (0.3, 0.9), norm 0.949 -> clipped to 0.5
    np.testing.assert_allclose(delta[0], np.array([0.3, 0.9]) * 0.5 / np.hypot(0.3, 0.9))
    np.testing.assert_allclose(delta[1], [0.0, 0.2], rtol=1e-6)


def test_drop_nonfinite_and_input_checks() -> None:
    ups, bad = drop_nonfinite([rows([0], [[1.0]]), rows([1], [[np.nan]])])
    assert bad == [1] and len(ups[1].indices) == 0
    np.testing.assert_array_equal(coordinate_median(2, ups)[0], [[1.0], [0.0]])
    with pytest.raises(ValueError, match="unique"):
        coordinate_median(2, [rows([0, 0], [[1.0], [2.0]])])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        trimmed_mean(2, [rows([2], [[1.0]])], beta=0.1)
    with pytest.raises(ConfigError):
        trimmed_mean(2, [rows([0], [[1.0]])], beta=0.5)
    with pytest.raises(ValueError, match="no device"):
        krum(2, [], num_malicious=0)


# ---------------------------------------------------------------- vectorised vs loop


def _random_sparse(n_dev: int, n_rows: int, dim: int, seed: int) -> list[SparseRows]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_dev):
        idx = rng.permutation(n_rows)[: rng.integers(0, n_rows + 1)]  # unsorted, maybe empty
        out.append(SparseRows(idx, rng.normal(size=(len(idx), dim))))
    return out


def _per_row(n_rows: int, ups: list[SparseRows],
             fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Reference: the rule applied row by row to the stacked values of the row's senders."""
    out = np.zeros((n_rows, ups[0].values.shape[1]))
    for r in range(n_rows):
        sent = [u.values[list(u.indices).index(r)] for u in ups if r in u.indices]
        if sent:
            out[r] = fn(np.array(sent))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_rules_match_loop_reference(seed: int) -> None:
    ups = _random_sparse(9, 12, 3, seed)
    np.testing.assert_allclose(coordinate_median(12, ups)[0],
                               _per_row(12, ups, lambda v: np.median(v, axis=0)))
    np.testing.assert_allclose(trimmed_mean(12, ups, beta=0.2)[0],
                               _per_row(12, ups, lambda v: stats.trim_mean(v, 0.2, axis=0)))
    dense = upload_matrix(12, ups).toarray()  # [9, 36]
    loop = np.array([[np.sum((a - b) ** 2) for b in dense] for a in dense])
    np.testing.assert_allclose(pairwise_sq_distances(upload_matrix(12, ups)), loop, atol=1e-12)


# ---------------------------------------------------------------- reduce to Flower when dense


def _full(seed: int, n_dev: int = 7, n_rows: int = 5,
          dim: int = 3) -> tuple[np.ndarray, list[SparseRows], list[tuple[list[np.ndarray], int]]]:
    """Every device sends every row: x [n_dev, n_rows, dim], the sparse and Flower forms."""
    x = np.random.default_rng(seed).normal(size=(n_dev, n_rows, dim))
    x[2] += 25.0  # an outlier device
    perm = np.random.default_rng(seed + 1).permutation(n_rows)
    ups = [SparseRows(perm, d[perm]) for d in x]  # every row sent, in shuffled order
    return x, ups, [([d], 1) for d in x]


@pytest.mark.parametrize("seed", [0, 1])
def test_median_and_trimmed_equal_flower_when_dense(seed: int) -> None:
    x, ups, results = _full(seed)
    np.testing.assert_allclose(coordinate_median(5, ups)[0], aggregate_median(results)[0])
    np.testing.assert_allclose(trimmed_mean(5, ups, beta=0.2)[0],
                               aggregate_trimmed_avg(results, 0.2)[0], rtol=1e-12)
    np.testing.assert_allclose(dense_median([[d] for d in x])[0][0], aggregate_median(results)[0])


@pytest.mark.parametrize(("seed", "to_keep"), [(0, 0), (0, 3), (1, 0), (1, 4)])
def test_krum_equals_flower_when_dense(seed: int, to_keep: int) -> None:
    x, ups, results = _full(seed)
    delta, info = krum(5, ups, num_malicious=2, to_keep=to_keep)
    np.testing.assert_allclose(delta, aggregate_krum(results, 2, to_keep)[0], rtol=1e-12)
    assert 2 in info["dropped"]
    flwr_dense, dense_info = dense_krum([[d] for d in x], num_malicious=2, to_keep=to_keep)
    assert dense_info["selected"] == info["selected"]
    np.testing.assert_allclose(flwr_dense[0], x[info["selected"]].mean(axis=0), rtol=1e-12)


def test_dense_trimmed_and_norm_bound() -> None:
    deltas = [[np.array([1.0, 0.0]), np.array([0.0])], [np.array([0.0, 3.0]), np.array([4.0])],
              [np.array([0.0, 0.0]), np.array([2.0])]]
    out, info = dense_norm_bound(deltas, bound=1.0)
    np.testing.assert_allclose(out[0], [1 / 3, 0.2])  # device 1 (norm 5) scaled by 1/5
    np.testing.assert_allclose(out[1], [(0.8 + 1.0) / 3])
    assert info["clipped"] == [1, 2]
    trimmed, _ = dense_trimmed_mean([[np.array([v])] for v in (1.0, 2.0, 3.0, 90.0)], beta=0.25)
    np.testing.assert_allclose(trimmed[0], [2.5])


@pytest.mark.parametrize("seed", [0, 1])
def test_packed_and_ranked_sorts_give_the_same_groups(seed: int) -> None:
    """float32 uploads take the packed uint64 sort: same values and same tie order (lower
    device first) as the exact float64 path, including negative values and ties."""
    rng = np.random.default_rng(seed)
    ups = []
    for _ in range(40):
        idx = rng.permutation(15)[: rng.integers(0, 16)]
        ups.append(SparseRows(idx, rng.integers(-3, 3, size=(len(idx), 4)).astype(np.float32)
                              * np.float32(0.75)))
    g = group_sorted(15, ups)
    rows_, devs, vals = stack_rows(15, ups)
    values, devices = _ranked_sort(rows_, devs, vals)
    np.testing.assert_array_equal(g.values, values)
    np.testing.assert_array_equal(g.devices, devices)
    for r, s, c in zip(g.rows, g.starts, g.counts):  # sorted within each row, per coordinate
        assert np.all(np.diff(g.values[s:s + c], axis=0) >= 0)
        assert {int(i) for i in g.devices[s:s + c, 0]} == {i for i, u in enumerate(ups)
                                                           if r in u.indices}


def test_float64_uploads_take_the_exact_path() -> None:
    ups = [SparseRows(np.array([0]), np.array([[v]])) for v in (1.0 + 1e-12, 1.0, 1.0 + 2e-12)]
    np.testing.assert_array_equal(coordinate_median(1, ups)[0], [[1.0 + 1e-12]])
