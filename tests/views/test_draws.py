"""Counter-based draws: SplitMix64 reference value, exclusion, weights, row independence."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.errors import ConfigError
from fedrec.views.draws import (
    GOLDEN,
    Touched,
    check_free,
    draw_excluding,
    mix64,
    random_bits,
    row_keys,
)


def test_mix64_is_splitmix64() -> None:
    # SplitMix64 seeded with 0: the first output (Vigna's reference splitmix64.c)
    assert int(mix64(np.array([GOLDEN], np.uint64))[0]) == 0xE220A8397B1DCDAF
    bits = random_bits(np.array([0], np.uint64), np.arange(2))[0]
    assert int(bits[0]) == 0xE220A8397B1DCDAF and int(bits[1]) == 0x6E789E6AA1B965F4


def test_keys_depend_on_every_part() -> None:
    base = row_keys(0, 1, np.array([3]), np.array([5]))
    for other in (row_keys(1, 1, np.array([3]), np.array([5])), row_keys(0, 2, np.array([3]),
                  np.array([5])), row_keys(0, 1, np.array([4]), np.array([5])),
                  row_keys(0, 1, np.array([3]), np.array([6]))):
        assert other[0] != base[0]


def test_draws_avoid_touched_items_are_distinct_and_row_wise() -> None:
    owner = np.repeat(np.arange(4), 50)                                     # 200 rows
    touched = Touched.of(np.array([0, 0, 1, 2, 2, 2]), np.array([1, 2, 3, 0, 4, 5]), 10)
    keys = row_keys(7, 1, owner, np.arange(200))
    got = draw_excluding(keys, owner, 3, touched)                          # [200, 3]
    assert not touched.contains(owner[:, None], got).any()
    assert all(len(set(r)) == 3 for r in got)
    perm = np.random.default_rng(0).permutation(200)
    assert np.array_equal(draw_excluding(keys[perm], owner[perm], 3, touched), got[perm])
    assert np.array_equal(draw_excluding(keys[:7], owner[:7], 3, touched), got[:7])


def test_weighted_draws_follow_the_weights() -> None:
    weights = np.array([0.0, 1.0, 0.0, 3.0, 4.0, 2.0])
    n = 40_000
    owner = np.zeros(n, np.int64)
    touched = Touched.of(np.array([0]), np.array([5]), 6)                  # item 5 excluded
    got = draw_excluding(row_keys(1, 2, owner, np.arange(n)), owner, 1, touched, weights)[:, 0]
    freq = np.bincount(got, minlength=6) / n
    assert freq[[0, 2, 5]].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(freq[[1, 3, 4]], [1 / 8, 3 / 8, 4 / 8], atol=0.01)


@pytest.mark.parametrize("weighted", [False, True])
def test_exact_fallback_when_almost_everything_is_touched(weighted) -> None:
    n_items = 5000
    free = np.array([17, 4321])
    items = np.setdiff1d(np.arange(n_items), free)
    touched = Touched.of(np.zeros(len(items), np.int64), items, n_items)
    weights = np.ones(n_items) if weighted else None
    owner = np.zeros(5, np.int64)
    got = draw_excluding(row_keys(0, 1, owner, np.arange(5)), owner, 2, touched, weights)
    assert all(sorted(r) == free.tolist() for r in got)


def test_check_free_names_the_device_and_the_key() -> None:
    touched = Touched.of(np.array([0, 1, 1]), np.array([0, 0, 1]), 3)
    check_free(touched, np.array([0, 1]), 2, 1, None, "negatives", "k")
    with pytest.raises(ConfigError, match="k = 2 but device 1 has only 1 items"):
        check_free(touched, np.array([0, 1]), 2, 2, None, "negatives", "k")
    with pytest.raises(ConfigError, match="k = 1 but device 0 has only 0 items"):
        check_free(touched, np.array([0]), 2, 1, np.array([1.0, 0.0, 0.0]), "exposures", "k")


def test_bitmap_and_binary_search_agree() -> None:
    rng = np.random.default_rng(0)
    owner, item = rng.integers(0, 30, 400), rng.integers(0, 37, 400)
    packed = Touched.of(owner, item, 37)
    searched = Touched(packed.keys, 37)                                     # no bitmap
    assert packed.bits is not None and len(packed.keys) == len(set(zip(owner, item)))
    q_owner, q_item = rng.integers(0, 31, (50, 60)), rng.integers(0, 37, (50, 60))
    truth = np.isin(q_owner * 37 + q_item, owner * 37 + item)
    assert np.array_equal(packed.contains(q_owner, q_item), truth)
    assert np.array_equal(searched.contains(q_owner, q_item), truth)
