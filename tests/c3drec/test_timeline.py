"""C3DRec's three stages on a hand-made table (T_device = 1000, T_test = 2000, 706 s gap)."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.c3drec.timeline import TimelineConfig, build_timeline
from fedrec.data.schema import Dataset, make_interactions
from fedrec.errors import ConfigError

# (user, item, ts, behaviour)
ROWS = [
    (1, 1, 10, "click"), (1, 2, 20, "click"), (1, 3, 30, "click"),   # pre session
    (1, 1, 900, "click"),                                             # pre, alone -> dropped
    (1, 2, 1100, "click"), (1, 4, 1150, "click"),                     # device session
    (1, 5, 1500, "buy"), (1, 3, 2500, "buy"),                         # tx before / after T_test
    (1, 2, 2100, "click"), (1, 3, 2150, "click"), (1, 9, 2200, "click"),  # test; 9 unknown
    (2, 1, 950, "click"), (2, 2, 990, "click"), (2, 3, 1010, "click"), (2, 4, 1020, "click"),
    (3, 1, 50, "click"), (3, 2, 60, "click"),                         # new user's pre clicks
    (3, 3, 1500, "click"), (3, 4, 1600, "click"), (3, 4, 2500, "click"), (3, 3, 2600, "click"),
    (4, 1, 10, "click"), (4, 2, 20, "click"),                         # too few clicks
]
CFG = TimelineConfig(t_device=1000, t_test=2000, min_user_clicks=3)


def table(rows=ROWS, has_time: bool = True) -> Dataset:
    u, i, t, b = (np.array(c) for c in zip(*rows, strict=True))
    return Dataset("hand", make_interactions(u, i, t, behavior=b), has_time)


def lists(sessions, owner: int) -> list[list[int]]:
    return [s.tolist() for s in sessions.of(owner)]


def test_stages_sessions_and_ids_by_hand() -> None:
    d = build_timeline(table(), CFG)
    assert d.user_map.labels.tolist() == [1, 2, 3]                   # user 4 dropped
    assert d.item_map.labels.tolist() == [1, 2, 3, 4, 5]             # 9 only in test
    assert d.is_new.tolist() == [False, False, True]                  # mean ts 1073, 992, 1385
    assert [lists(d.cloud_pre, u) for u in range(3)] == [[[0, 1, 2]], [[0, 1]], []]
    assert [lists(d.device_train, u) for u in range(3)] == [[[1, 3]], [[2, 3]], [[2, 3]]]
    assert [lists(d.test, u) for u in range(3)] == [[[1, 2]], [], [[3, 2]]]
    assert [lists(d.central, u) for u in range(3)] == [
        [[0, 1, 2], [1, 3]], [[0, 1], [2, 3]], [[0, 1], [2, 3]]]
    assert d.transactions.toarray().nonzero() == ((0,), (4,))        # buy after T_test left out


def test_cloud_sees_no_click_at_or_after_t_device() -> None:
    d = build_timeline(table(), CFG)
    # the session 950, 990 | 1010, 1020 of user 2 is cut at T_device: only [1, 2] is pre
    assert d.cloud_pre.n_events == 2 + 1 and len(d.cloud_pre) == 2
    moved = [(u, i, t + 5000 if t >= 1000 and b == "click" else t, b) for u, i, t, b in ROWS]
    assert lists(build_timeline(table(moved), CFG).cloud_pre, 0) == [[0, 1, 2]]


def test_device_view_and_cf_matrix() -> None:
    d = build_timeline(table(), CFG)
    dev = d.device(2)
    assert dev.is_new and [s.tolist() for s in dev.train] == [[2, 3]]
    assert [s.tolist() for s in dev.test] == [[3, 2]]
    assert d.cf_matrix() is d.transactions
    both = build_timeline(table(), TimelineConfig(t_device=1000, t_test=2000, min_user_clicks=3,
                                                  cf_source="transactional+pre"))
    assert both.cf_matrix().toarray().astype(int).tolist() == [
        [1, 1, 1, 0, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]]             # new user's pre: not used


def test_positional_cutoffs_and_random_new_users() -> None:
    rows = [(u, 10 * u + k % 8, k, "click") for u in (1, 2) for k in range(10)]  # test: seen items
    cfg = TimelineConfig(device_frac=0.3, test_frac=0.2, min_user_clicks=3, new_user_quantile=0.5)
    d = build_timeline(table(rows, has_time=False), cfg)
    first = d.item_map.encode(np.array([10, 11, 12, 13, 14]))
    assert lists(d.central, 0)[0] == first.tolist()
    assert [len(s) for s in d.device_train.of(0)] == [3]
    assert lists(d.test, 0) == [d.item_map.encode(np.array([10, 11])).tolist()]
    assert d.is_new.sum() == 1
    again = build_timeline(table(rows, has_time=False), cfg)
    assert again.is_new.tolist() == d.is_new.tolist()                 # seeded


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="cf-source"):
        TimelineConfig(cf_source="clicks")
    with pytest.raises(ConfigError, match="after"):
        TimelineConfig(t_device=3, t_test=2)
