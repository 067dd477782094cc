"""The leave-one-out and C3DRec timeline views under the typed contract: cloud views, and
validation negatives drawn independently of the (unchanged) test negatives."""

from __future__ import annotations

import numpy as np

from fedrec.c3drec.timeline import TimelineCloud, TimelineConfig, build_timeline
from fedrec.data.splits import kcore, leave_one_out, train_matrix
from fedrec.data.synthetic import generate, preset
from fedrec.federated import LeaveOneOutData, LooCloud
from fedrec.metrics import sample_negatives
from fedrec.views import FederatedView, cloud_names


def loo(protocol: str = "sampled", seed: int = 3) -> tuple[LeaveOneOutData, object]:
    df = kcore(generate(preset("tiny")).interactions, min_user=5, min_item=1)
    split = leave_one_out(df)
    return LeaveOneOutData(split, protocol, 10, seed), split


def seen_sets(split) -> list[set[int]]:
    m = train_matrix(split).tolil()
    for part in (split.valid, split.test):
        m[part["user"].to_numpy(), part["item"].to_numpy()] = 1
    return [set(r) for r in m.rows], m.tocsr()


def test_test_negatives_are_drawn_exactly_as_before() -> None:
    fed, split = loo()
    _, seen = seen_sets(split)
    before = sample_negatives(fed.n_items, seen, 10, 3)       # the one call of earlier versions
    assert all(np.array_equal(fed.device(d).negatives, before[d]) for d in range(fed.n_devices))


def test_valid_negatives_are_independent_and_exclude_seen_items() -> None:
    fed, split = loo()
    sets, _ = seen_sets(split)
    overlap = []
    for d in range(fed.n_devices):
        dev = fed.device(d)
        assert dev.valid_negatives.shape == (10,) and len(set(dev.valid_negatives)) == 10
        assert not set(dev.valid_negatives) & sets[d]
        overlap.append(len(set(dev.valid_negatives) & set(dev.negatives)))
    assert np.mean(overlap) < 5                              # 10 if shared, ~3 if independent
    again, _ = loo()
    assert np.array_equal(again.device(4).valid_negatives, fed.device(4).valid_negatives)


def test_full_protocol_has_no_negatives() -> None:
    fed, _ = loo("full")
    assert fed.device(0).negatives is None and fed.device(0).valid_negatives is None


def test_loo_cloud_view() -> None:
    fed, _ = loo()
    cloud = fed.cloud()
    assert isinstance(cloud, LooCloud) and isinstance(fed, FederatedView)
    assert (cloud.n_devices, cloud.n_items) == (fed.n_devices, fed.n_items)
    assert np.array_equal(cloud.item_popularity, fed.item_popularity)
    assert cloud_names(cloud) == {"n_devices", "n_items", "item_popularity"}


def test_timeline_cloud_view_matches_the_data() -> None:
    data = build_timeline(generate(preset("tiny")), TimelineConfig(min_user_clicks=5,
                                                                   cf_source="transactional+pre"))
    cloud = data.cloud()
    assert isinstance(cloud, TimelineCloud) and isinstance(data, FederatedView)
    assert cloud.cloud_pre is data.cloud_pre and cloud.n_devices == data.n_devices
    assert (cloud.cf_matrix() != data.cf_matrix()).nnz == 0
    assert cloud.cf_matrix().nnz > data.transactions.nnz      # pre clicks were added
    assert {"device", "device_train", "test", "central"}.isdisjoint(cloud_names(cloud))
