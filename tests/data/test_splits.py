"""Splits and preprocessing pinned on tiny hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrec.data.schema import make_interactions
from fedrec.data.splits import (
    IdMap,
    device_ids,
    kcore,
    leave_one_out,
    old_new_users,
    positional_cutoff_split,
    reindex,
    sessionize,
    time_cutoff_split,
    train_items_by_user,
    train_matrix,
)
from fedrec.errors import ConfigError, DataError


def table(user: list[int], item: list[int], ts: list[int] | None = None) -> pd.DataFrame:
    """Canonical table; ts defaults to 0, 1, 2, ... in the given order."""
    return make_interactions(np.array(user), np.array(item),
                             np.arange(len(user)) if ts is None else np.array(ts))


def pairs(df: pd.DataFrame) -> list[tuple[int, int]]:
    return list(zip(df["user"].tolist(), df["item"].tolist()))


# ---------------------------------------------------------------- kcore
CHAIN = {"user": [1, 1, 2, 2, 3, 3], "item": [10, 11, 11, 12, 12, 13]}  # collapses entirely
BLOCK = {"user": [4, 4, 5, 5], "item": [20, 21, 20, 21]}              # a 2-core on its own


def test_kcore_cascades_over_several_rounds_to_the_block() -> None:
    df = table(CHAIN["user"] + BLOCK["user"], CHAIN["item"] + BLOCK["item"])
    out = kcore(df, min_user=2, min_item=2)
    assert pairs(out) == [(4, 20), (4, 21), (5, 20), (5, 21)]
    assert list(out.index) == [0, 1, 2, 3]
    assert out["ts"].tolist() == [6, 7, 8, 9]          # row order and other columns kept
    assert len(df) == 10                               # input untouched


def test_kcore_empty_result_reports_counts_after_each_step() -> None:
    with pytest.raises(DataError) as err:
        kcore(table(**CHAIN), min_user=2, min_item=2)
    msg = str(err.value)
    assert "\n" not in msg
    assert ("rows/users/items after each step: input 6/3/4; items>=2 (round 1) 4/3/2; "
            "users>=2 (round 2) 2/1/2; items>=2 (round 2) 0/0/0;") in msg
    assert "k-core (min_user=2, min_item=2)" in msg and "lower min_user/min_item" in msg


def test_kcore_users_before_items_and_thresholds() -> None:
    df = table([1, 1, 1, 2], [10, 11, 12, 10])
    assert pairs(kcore(df, min_user=1, min_item=1)) == pairs(df)
    assert pairs(kcore(df, min_user=0, min_item=0)) == pairs(df)
    assert pairs(kcore(df, min_user=3, min_item=1)) == [(1, 10), (1, 11), (1, 12)]
    with pytest.raises(DataError, match="users>=4 \\(round 1\\) 0/0/0"):
        kcore(df, min_user=4, min_item=1)
    with pytest.raises(ConfigError):
        kcore(df, min_user=-1)


def test_kcore_counts_duplicate_rows() -> None:
    df = table([1, 1, 2], [10, 10, 11])
    assert pairs(kcore(df, min_user=2, min_item=2)) == [(1, 10), (1, 10)]


def _reference_kcore(df: pd.DataFrame, ku: int, ki: int) -> pd.DataFrame:
    while True:
        keep = (df.groupby("user")["user"].transform("size") >= ku) & (
            df.groupby("item")["item"].transform("size") >= ki)
        if keep.all():
            return df.reset_index(drop=True)
        df = df.loc[keep]


def test_kcore_matches_simple_reference_on_random_data() -> None:
    rng = np.random.default_rng(0)
    df = table(rng.integers(0, 60, 800).tolist(), rng.zipf(1.6, 800).clip(max=300).tolist())
    got, want = kcore(df, 8, 4), _reference_kcore(df, 8, 4)
    assert 0 < len(got) < len(df)
    pd.testing.assert_frame_equal(got, want)


# ---------------------------------------------------------------- IdMap / reindex
def test_idmap_encode_decode_roundtrip_and_errors() -> None:
    m = IdMap.from_values(np.array([30, 10, 20, 10]), "user")
    assert m.labels.tolist() == [10, 20, 30] and len(m) == 3
    np.testing.assert_array_equal(m.encode([20, 30, 10, 20]), [1, 2, 0, 1])
    np.testing.assert_array_equal(m.decode([2, 0]), [30, 10])
    np.testing.assert_array_equal(m.contains([5, 10, 25, 30, 99]), [False, True, False, True, False])
    with pytest.raises(DataError, match=r"2 unknown user ids \(e\.g\. \[25, 99\]\) are not in "
                                        r"the user map of 3 ids"):
        m.encode([10, 99, 25, 99])
    with pytest.raises(DataError, match=r"user ids \[-1, 3\] are outside 0\.\.2"):
        m.decode([0, 3, -1])
    with pytest.raises(ValueError):
        m.labels[0] = 5                                   # read-only
    assert m == IdMap(np.array([10, 20, 30]), "user") and m != IdMap(np.array([10, 20]), "user")
    with pytest.raises(DataError, match="strictly increasing"):
        IdMap(np.array([3, 1]))


def test_idmap_copies_its_labels_and_handles_strings() -> None:
    raw = np.array([1, 5])
    m = IdMap(raw)
    raw[0] = 9
    assert m.labels.tolist() == [1, 5]
    s = IdMap.from_values(np.array(["b", "a", "b"]), "item")
    np.testing.assert_array_equal(s.encode(["b", "a"]), [1, 0])


def test_reindex_assigns_ids_in_sorted_raw_order() -> None:
    df = table([7, 3, 3], [50, 20, 50], [0, 5, 6])     # sorted to users 3, 3, 7
    out, users, items = reindex(df)
    assert pairs(out) == [(0, 0), (0, 1), (1, 1)]
    assert users.labels.tolist() == [3, 7] and items.labels.tolist() == [20, 50]
    assert out["ts"].tolist() == [5, 6, 0] and out["user"].dtype == np.int64
    assert df["user"].tolist() == [3, 3, 7]              # input untouched
    np.testing.assert_array_equal(users.decode(out["user"]), df["user"])
    np.testing.assert_array_equal(items.decode(out["item"]), df["item"])


# ---------------------------------------------------------------- sessionize
def test_sessionize_splits_on_gap_strictly_greater_and_on_user_change() -> None:
    df = table([1, 1, 1, 1, 2, 2, 3], [0] * 7, [0, 706, 1413, 1413, 1413, 1500, 0])
    np.testing.assert_array_equal(sessionize(df), [0, 0, 1, 1, 2, 2, 3])
    np.testing.assert_array_equal(sessionize(df, gap_seconds=86), [0, 1, 2, 2, 3, 4, 5])
    assert sessionize(df).dtype == np.int64
    assert sessionize(table([], [], [])).tolist() == []


def test_order_dependent_functions_reject_unsorted_rows() -> None:
    bad = pd.DataFrame({"user": [1, 1, 0], "item": [0, 1, 2], "ts": [5, 4, 9]})
    for fn in (sessionize, leave_one_out, lambda d: positional_cutoff_split(d, 0.1, 0.1)):
        with pytest.raises(DataError, match="sorted by \\(user, ts\\) but row 1 is out of order"):
            fn(bad)


# ---------------------------------------------------------------- leave_one_out
def test_leave_one_out_last_to_test_second_last_to_valid() -> None:
    df = table(user=[10, 10, 10, 10, 20, 20, 20, 30, 30, 40],
               item=[1, 2, 3, 4, 5, 7, 6, 8, 9, 1],
               ts=[1, 2, 3, 4, 1, 9, 9, 1, 2, 1])   # user 20: tie at ts 9 keeps file order
    s = leave_one_out(df)
    assert (s.n_users, s.n_items) == (4, 9)
    # contiguous ids: users 10,20,30,40 -> 0..3; items 1..9 -> 0..8
    assert pairs(s.test) == [(0, 3), (1, 5)]            # raw (10, 4), (20, 6): last in file
    assert pairs(s.valid) == [(0, 2), (1, 6)]           # raw (10, 3), (20, 7)
    # users with < 3 rows (30, 40) stay entirely in train
    assert pairs(s.train) == [(0, 0), (0, 1), (1, 4), (2, 7), (2, 8), (3, 0)]
    assert s.user_map.decode(s.test["user"]).tolist() == [10, 20]
    assert s.item_map.decode(s.test["item"]).tolist() == [4, 6]
    assert len(s.train) + len(s.valid) + len(s.test) == len(df)


def test_leave_one_out_single_interaction_users_only() -> None:
    s = leave_one_out(table([5, 6], [1, 1]))
    assert len(s.valid) == len(s.test) == 0 and pairs(s.train) == [(0, 0), (1, 0)]


def test_train_items_exclude_lists_are_sorted_and_deduplicated() -> None:
    df = table([1, 1, 1, 1, 1, 2, 2, 2], [9, 3, 9, 5, 7, 3, 4, 5])
    s = leave_one_out(df)                  # items 3,4,5,7,9 -> 0..4
    got = train_items_by_user(s)
    assert [g.tolist() for g in got] == [[0, 4], [0]]
    m = train_matrix(s)
    assert m.shape == (2, 5) and m.nnz == 3 and set(m.data.tolist()) == {1.0}
    np.testing.assert_array_equal(m.toarray(), [[1, 0, 0, 0, 1], [1, 0, 0, 0, 0]])


# ---------------------------------------------------------------- time splits
def test_time_cutoff_split_boundaries() -> None:
    df = table([1, 1, 1, 1, 2], [1, 2, 3, 4, 5], [5, 10, 15, 20, 12])
    ts_split = time_cutoff_split(df, t_device=10, t_test=20)
    assert ts_split.pre["ts"].tolist() == [5]
    assert ts_split.device["ts"].tolist() == [10, 15, 12]
    assert ts_split.test["ts"].tolist() == [20]
    assert list(ts_split.device.index) == [0, 1, 2]
    assert len(time_cutoff_split(df, 12, 12).device) == 0
    with pytest.raises(ConfigError, match="t_device=20 is after t_test=10"):
        time_cutoff_split(df, 20, 10)


def test_positional_cutoff_split_uses_floors_per_user() -> None:
    df = table([1] * 10 + [2] * 3, list(range(13)))
    s = positional_cutoff_split(df, device_frac=0.3, test_frac=0.2)
    # user 1: 10 rows -> 5 pre, 3 device, 2 test; user 2: 3 rows -> floor(1.5)=1 tail, 0 test
    assert s.pre["item"].tolist() == [0, 1, 2, 3, 4, 10, 11]
    assert s.device["item"].tolist() == [5, 6, 7, 12]
    assert s.test["item"].tolist() == [8, 9]
    with pytest.raises(ConfigError, match="sum <= 1"):
        positional_cutoff_split(df, 0.7, 0.4)


def test_positional_cutoff_split_guards_float_round_off() -> None:
    df = table([1] * 50, list(range(50)))
    assert 50 * 0.58 < 29                                  # 28.999999999999996
    assert len(positional_cutoff_split(df, 0.0, 0.58).test) == 29


# ---------------------------------------------------------------- old/new users, devices
def test_old_new_users_by_quantile_of_mean_timestamp() -> None:
    users = np.repeat(np.arange(101, 111), 2)                         # 10 users, 2 rows each
    ts = np.stack([np.arange(10) * 2, np.arange(10) * 2 + 2], 1).ravel()   # means 1, 3, ..., 19
    df = table(users.tolist(), [0] * 20, ts.tolist())
    old, new = old_new_users(df, 0.9)              # np.quantile(1..19 step 2, 0.9) = 17.2
    assert old.tolist() == list(range(101, 110)) and new.tolist() == [110]
    old, new = old_new_users(df, 0.5)              # median 10 -> means 1..9 old
    assert new.tolist() == [106, 107, 108, 109, 110]
    assert len(old_new_users(df, 1.0)[1]) == 0
    with pytest.raises(ConfigError):
        old_new_users(df, 1.5)


def test_device_ids_are_contiguous_user_ids_and_stable() -> None:
    a = table([30, 10, 20], [1, 2, 3])
    b = table([20, 20, 10, 30], [4, 5, 6, 7])        # same raw users, different rows
    _, ua, _ = reindex(a)
    _, ub, _ = reindex(b)
    np.testing.assert_array_equal(device_ids(ua), [0, 1, 2])
    np.testing.assert_array_equal(device_ids(ua), device_ids(ub))
    assert ua.decode(device_ids(ua)).tolist() == [10, 20, 30] == ub.labels.tolist()


def test_splits_handle_a_million_rows() -> None:
    rng = np.random.default_rng(0)
    n = 1_000_000
    df = pd.DataFrame({"user": np.sort(rng.integers(0, 6040, n)),
                       "item": rng.integers(0, 3706, n), "ts": np.arange(n) * 60})
    s = leave_one_out(df)
    assert sessionize(df)[-1] == 6040 - 1          # 60 s gaps: one session per user
    assert sum(len(x) for x in train_items_by_user(s)) <= len(s.train)
    assert len(s.test) == 6040
