"""The sample view on a hand-made table: 5 users, 8 items, timestamps on 4 days."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrec.data.schema import Dataset, make_interactions
from fedrec.errors import ConfigError
from fedrec.views import (
    DEVICE,
    EXPOSURE,
    NEGATIVE,
    POSITIVE,
    PRE,
    TEST,
    VALID,
    FederatedView,
    SampleViewConfig,
    Windows,
    build_sample_view,
    cloud_names,
    resample_negatives,
)

DAY = 86_400
# raw user -> [(contiguous item, day)] in time order; raw item id = 100 + item
HISTORY = {
    10: [(0, 0), (1, 0), (2, 1), (3, 2), (4, 3)],
    11: [(5, 0), (6, 1), (7, 2), (0, 3)],
    12: [(1, 1), (3, 1), (5, 2), (7, 2), (2, 3), (4, 3)],
    13: [(6, 0), (7, 3)],                            # too short to evaluate (1 test + 1 valid)
    14: [(0, 0), (2, 1), (4, 1), (6, 2), (1, 3)],
}
RAW_CATEGORY = {0: 30, 1: 30, 2: 10, 3: 10, 4: 20, 5: 20, 6: 40, 7: -1}
TOUCHED = {u: {i for i, _ in rows} for u, rows in enumerate(HISTORY.values())}


def dataset(has_time: bool = True) -> Dataset:
    rows = [(u, i, d * DAY + 60 * k) for u, evs in HISTORY.items() for k, (i, d) in enumerate(evs)]
    user, item, ts = (np.array(c) for c in zip(*rows, strict=True))
    table = make_interactions(user, item + 100, ts, category=[RAW_CATEGORY[i] for i in item])
    people = pd.DataFrame({"gender": pd.Categorical(["F", "M", "M", "F"], categories=["F", "M"]),
                           "age": [1, 25, 56, 18], "occupation": [4, 0, 20, 4]},
                          index=pd.Index([10, 11, 12, 14], name="user"))   # 13 has no profile
    genres = pd.DataFrame({"genres": [("Drama",), ("Comedy", "Drama"), (), ("Action",)]},
                          index=pd.Index([100, 101, 102, 103], name="item"))
    return Dataset("hand", table, has_time, people, genres)


def view(**cfg):
    base = {"history_len": 2, "negatives": 1, "exposures": 2, "eval_negatives": 2}
    return build_sample_view(dataset(), SampleViewConfig(**{**base, **cfg}))


def test_sequences_parts_by_position_and_day() -> None:
    v = view()
    assert v.n_devices == 5 and v.n_items == 8
    assert v.device(0).items.tolist() == [0, 1, 2, 3, 4]
    assert [v.device(d).part.tolist() for d in range(5)] == [
        [PRE, PRE, DEVICE, VALID, TEST], [PRE, DEVICE, VALID, TEST],
        [PRE, PRE, DEVICE, DEVICE, VALID, TEST], [PRE, DEVICE], [PRE, PRE, DEVICE, VALID, TEST]]
    assert v.device(2).day.tolist() == [1, 1, 2, 2, 3, 3]
    days = view(windows=Windows(by="days", device_day=1, valid_day=2, test_day=3))
    assert [days.device(d).part.tolist() for d in (2, 3, 4)] == [
        [DEVICE, DEVICE, VALID, VALID, TEST, TEST], [PRE, TEST], [PRE, DEVICE, DEVICE, VALID, TEST]]
    mcsf = view(windows=Windows(test_last=2, valid_last=0, device_last=2))
    assert mcsf.device(2).part.tolist() == [PRE, PRE, DEVICE, DEVICE, TEST, TEST]


def test_samples_histories_and_side_features_by_hand() -> None:
    s = view().device(0).samples                           # 5 events x (1 + 1 + 2) samples
    assert len(s) == 20
    assert s.kind[:4].tolist() == [POSITIVE, NEGATIVE, EXPOSURE, EXPOSURE]
    assert s.item[s.kind == POSITIVE].tolist() == [0, 1, 2, 3, 4]
    assert s.label.tolist() == [1, 0, 0, 0] * 5
    assert s.event.tolist() == np.repeat(np.arange(5), 4).tolist()
    assert s.history[::4].tolist() == [[-1, -1], [0, -1], [0, 1], [1, 2], [2, 3]]
    assert s.hist_len[::4].tolist() == [0, 1, 2, 2, 2]
    assert s.category[::4].tolist() == [2, 2, 0, 0, 1]     # raw 30, 30, 10, 10, 20
    assert s.genres[::4].tolist() == [[2, -1], [1, 2], [-1, -1], [0, -1], [-1, -1]]
    assert (s.part[::4] == [PRE, PRE, DEVICE, VALID, TEST]).all()
    device_part = s.select(s.part == DEVICE)
    assert device_part.item[0] == 2 and len(device_part) == 4


def test_negatives_and_exposures_avoid_touched_items() -> None:
    v = view(negatives=2, exposures=2)
    for d in range(5):
        s = v.device(d).samples
        drawn = s.item[s.kind != POSITIVE].reshape(-1, 4)  # per event: 2 negatives, 2 exposures
        assert not set(drawn.ravel()) & TOUCHED[d]
        assert all(len(set(row[:2])) == 2 and len(set(row[2:])) == 2 for row in drawn)
    free = v.device(2).samples                              # user 12 never touched {0, 6} only
    assert all(set(r) == {0, 6} for r in free.item[free.kind == EXPOSURE].reshape(-1, 2))


def test_eval_candidates_exclude_touched_and_are_deterministic() -> None:
    a, b = view(), view()
    dev = a.device(0)
    assert (dev.valid.event.tolist(), dev.valid.target.tolist()) == ([3], [3])
    assert (dev.test.event.tolist(), dev.test.target.tolist()) == ([4], [4])
    assert dev.test.history.tolist() == [[2, 3]]
    assert dev.test.candidates.shape == (1, 3) and dev.test.candidates[0, 0] == 4
    for d in range(5):
        for part in ("valid", "test"):
            got = getattr(a.device(d), part).negatives
            assert np.array_equal(got, getattr(b.device(d), part).negatives)
            assert not set(got.ravel()) & TOUCHED[d]
    assert len(a.device(3).test.event) == 0                 # 2 events: not evaluated


def test_full_ranking_draws_no_eval_negatives() -> None:
    dev = view(eval_protocol="full").device(0)
    assert dev.test.negatives is None and dev.test.target.tolist() == [4]


def test_valid_and_test_draws_are_independent() -> None:
    from fedrec.data.synthetic import generate, preset

    v = build_sample_view(generate(preset("tiny")), SampleViewConfig(eval_negatives=10))
    valid = np.concatenate([v.device(d).valid.negatives for d in range(v.n_devices)])
    test = np.concatenate([v.device(d).test.negatives for d in range(v.n_devices)])
    overlap = np.mean([len(set(a) & set(b)) for a, b in zip(valid, test, strict=True)])
    assert overlap < 5.0                    # ~10 * 10 / ~40 free items if independent, 10 if equal
    again = build_sample_view(generate(preset("tiny")), SampleViewConfig(eval_negatives=10, seed=1))
    assert not np.array_equal(again.device(0).test.negatives, v.device(0).test.negatives)


def test_a_device_draws_the_same_whichever_devices_are_built() -> None:
    v = view()
    every = v.draws
    for subset in ([2], [4, 2], [0, 1, 2, 3, 4], [3, 2, 0]):
        part = v.draws_for(np.array(subset))
        mine = np.isin(v.log.owner[part.rows], [2])
        rows = part.rows[mine]
        assert np.array_equal(part.negatives[mine], every.negatives[rows])
        assert np.array_equal(part.exposures[mine], every.exposures[rows])
        k = np.isin(part.test_rows, rows)
        assert k.sum() == 1
        assert np.array_equal(part.test[k], every.test[np.isin(every.test_rows, rows)])


def test_per_epoch_negatives_start_from_the_views_own() -> None:
    v = view(negatives=2)
    dev = v.device(4)
    own = dev.samples.item[dev.samples.kind == NEGATIVE].reshape(-1, 2)
    assert np.array_equal(resample_negatives(dev, v.n_items, 2, seed=0, epoch=0), own)
    later = resample_negatives(dev, v.n_items, 2, seed=0, epoch=1)
    assert not np.array_equal(later, own) and not set(later.ravel()) & TOUCHED[4]


def test_profiles_and_cloud_view() -> None:
    v = view(cloud_profiles=True)
    assert v.device(0).profile.tolist() == [0, 0, 1]        # F, age 1 -> group 0, occupation 4
    assert v.device(2).profile.tolist() == [1, 6, 2]        # M, 56 -> group 6, occupation 20
    assert v.device(3).profile.tolist() == [-1, -1, -1]     # user 13 has no profile row
    cloud = v.cloud()
    assert cloud.logs.item.tolist() == [0, 1, 5, 1, 3, 6, 0, 2]   # the pre events only
    assert (cloud.logs.part == PRE).all() and cloud.popularity.sum() == 8
    assert cloud.profiles.sizes.tolist() == [2, 7, 3]
    assert "device" not in cloud_names(cloud) and view().cloud().profiles is None
    assert isinstance(v, FederatedView)


def test_popularity_exposures_follow_training_counts() -> None:
    from fedrec.data.synthetic import generate, preset

    data = generate(preset("tiny"))
    pop = build_sample_view(data, SampleViewConfig(exposures=3, exposure_sampler="popularity",
                                                   eval_negatives=5))
    uni = build_sample_view(data, SampleViewConfig(exposures=3, eval_negatives=5))

    def mean_count(v) -> float:
        items = np.concatenate([v.device(d).samples.item[v.device(d).samples.kind == EXPOSURE]
                                for d in range(v.n_devices)])
        return float(v.sampler_popularity[items].mean())

    assert mean_count(pop) > 1.3 * mean_count(uni)


@pytest.mark.parametrize(("cfg", "match"), [
    ({"windows": Windows(by="days")}, "has no timestamps"),
    ({"eval_negatives": 5}, "eval-negatives = 5 but device 2 has only 2 items"),
    ({"exposures": 3}, "view-exposures = 3 but device 2 has only 2"),
])
def test_impossible_settings_name_the_key(cfg, match) -> None:
    data = dataset(has_time="windows" not in cfg)
    with pytest.raises(ConfigError, match=match):
        build_sample_view(data, SampleViewConfig(**{"eval_negatives": 2, **cfg}))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"history_len": 0}, "view-history-len must be >= 1"),
    ({"exposure_sampler": "zipf"}, "view-exposure-sampler = 'zipf'"),
    ({"cloud_parts": ("pre", "later")}, r"view-cloud-parts names \['later'\]"),
    ({"eval_protocol": "all"}, "eval-protocol = 'all'"),
])
def test_config_errors_are_one_line(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        SampleViewConfig(**kwargs)


def test_windows_errors() -> None:
    with pytest.raises(ConfigError, match="need device <= valid <= test"):
        Windows(by="days", device_day=3, valid_day=2, test_day=4)
    with pytest.raises(ConfigError, match="view-windows = 'hours'"):
        Windows(by="hours")


def test_config_from_a_data_config_and_the_cached_builder() -> None:
    from fedrec.config import DataConfig
    from fedrec.views import prepare_samples

    data = DataConfig(dataset="synthetic-tiny", eval_negatives=7, seed=3, min_user_interactions=4)
    cfg = SampleViewConfig.from_data(data, exposures=2)
    assert (cfg.eval_negatives, cfg.seed, cfg.min_user_interactions, cfg.exposures) == (7, 3, 4, 2)
    v = prepare_samples(data, cfg)
    assert prepare_samples(data, cfg) is v and v.device(0).test.negatives.shape == (1, 7)
