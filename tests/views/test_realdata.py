"""The sample view on the shared real datasets (skipped when ``../shared/data`` is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.data import load_dataset
from fedrec.data.synthetic import generate, preset
from fedrec.views import (
    DEVICE,
    EXPOSURE,
    PRE,
    TEST,
    VALID,
    SampleView,
    SampleViewConfig,
    Windows,
    build_sample_view,
)

TAOBAO_DAY0 = 1511539200          # 2017-11-25 00:00 China time (UTC+8)


def check_device(view: SampleView, d: int) -> None:
    """Draws avoid the device's items; histories end right before each event."""
    dev = view.device(d)
    touched = set(dev.items.tolist())
    s = dev.samples
    assert not set(s.item[s.label == 0].tolist()) & touched
    for part in (dev.valid, dev.test):
        if part.negatives is not None:
            assert not set(part.negatives.ravel().tolist()) & touched
    last = s.history[s.hist_len > 0, s.hist_len[s.hist_len > 0] - 1]     # most recent item
    assert np.array_equal(last, dev.items[s.event[s.hist_len > 0] - 1])


@pytest.mark.realdata
def test_ml1m_sample_view(shared_data) -> None:
    data = load_dataset("ml-1m", data_root=shared_data, use_cache=False)
    view = build_sample_view(data, SampleViewConfig(exposures=2))
    assert (view.n_devices, view.n_items) == (6_040, 3_706)
    assert view.log.items.n_genres == 18 and view.log.items.genres.shape == (3_706, 6)
    assert view.log.profiles.names == ("gender", "age", "occupation")
    assert view.log.profiles.sizes.tolist() == [2, 7, 21]
    counts = np.bincount(view.log.part, minlength=4)
    assert counts[VALID] == counts[TEST] == 6_040 and counts[PRE] >= counts[DEVICE]
    dev = view.device(0)
    assert dev.samples.history.shape == (4 * len(dev.items), 50)
    assert dev.test.candidates.shape == (1, 101) and dev.test.target[0] == dev.items[-1]
    assert (dev.samples.genres[dev.samples.kind == EXPOSURE] >= 0).any()
    for d in (0, 1234, 6039):
        check_device(view, d)


@pytest.mark.realdata
def test_taobao_sample_view_by_day(shared_data) -> None:
    data = load_dataset("taobao", data_root=shared_data, use_cache=False)
    windows = Windows(by="days", day_origin=TAOBAO_DAY0, device_day=6, valid_day=8, test_day=8)
    view = build_sample_view(data, SampleViewConfig(windows=windows, exposures=1,
                                                    exposure_sampler="popularity"))
    assert view.n_devices == 814 and view.log.profiles is None
    assert view.log.items.n_categories > 1000 and (view.log.items.category >= 0).all()
    days = view.log.day
    assert np.percentile(days, 1) >= 0 and np.percentile(days, 99) <= 8
    assert np.bincount(view.log.part, minlength=4)[VALID] == 0            # valid_day == test_day
    cloud = view.cloud()
    assert (cloud.logs.day < 6).all() and len(cloud.logs.item) == (days < 6).sum()
    check_device(view, 0)


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["ml-100k", "amazon-video", "steam", "taobao-timeslice",
                                  "ml-1m/ratings_users0001-2999.dat.gz"])
def test_every_preset_and_file_builds(shared_data, name) -> None:
    data = load_dataset(name, data_root=shared_data, use_cache=False)
    view = build_sample_view(data, SampleViewConfig(max_devices=300, exposures=1))
    assert view.n_devices == min(300, data.n_users)
    assert (view.log.day >= 0).all() == data.has_time
    check_device(view, 0)
    check_device(view, view.n_devices - 1)


def test_synthetic_sample_view() -> None:
    data = generate(preset("small"))
    view = build_sample_view(data, SampleViewConfig(exposures=2, history_len=20))
    assert view.n_devices == 1_000 and view.log.items.n_categories == 25
    assert view.log.profiles is None                     # its user table is ground truth
    check_device(view, 0)
    check_device(view, 999)
