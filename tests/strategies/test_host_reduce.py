"""Host reduction: a cohort sends its devices' summed uploads; the cloud's update must equal
the per-device aggregation (to float64 rounding), and strategies that need every upload
(defences, LDP ledger, FedAvg, C3DRec, plug-ins) never ask for sums."""

from __future__ import annotations

import numpy as np
import pytest

from clients.host import DeviceHost
from experiments.setup import with_threats
from fedrec import devices as dev
from fedrec.payload import (
    BROADCAST,
    REDUCED,
    SparseRows,
    nbytes,
    pack,
    scoped,
    split_scopes,
    unpack,
)
from fedrec.protocol import FIT
from fedrec.reduce import combine_partials, reduce_uploads
from fedrec.threat_config import parse_threat_config
from strategies.aggregation import (
    sparse_client_mean,
    sparse_row_mean,
    weighted_mean,
)
from strategies.base import DeviceStrategy
from strategies.fedavg import FedAvg
from strategies.fedmf import FedMF
from strategies.fedncf import FedNCF
from strategies.pfedrec import PFedRec
from tests.strategies.test_baselines import make, task

N_ROWS, DIM = 7, 3


def random_uploads(n: int, seed: int = 0) -> tuple[list[dict[str, np.ndarray]], list[int]]:
    """n devices: sparse rows of table "t" [7, 3] and a dense "w" [2, 2], float32."""
    rng = np.random.default_rng(seed)
    ups, weights = [], []
    for _ in range(n):
        idx = np.sort(rng.choice(N_ROWS, size=rng.integers(1, N_ROWS), replace=False))
        ups.append({"t.idx": idx.astype(np.int64),
                    "t.val": rng.standard_normal((len(idx), DIM)).astype(np.float32),
                    "w": rng.standard_normal((2, 2)).astype(np.float32)})
        weights.append(int(rng.integers(1, 50)))
    return ups, weights


SPEC = {"sparse": {"t": N_ROWS}, "dense": ["w"]}


@pytest.mark.parametrize("cuts", [[10], [1] * 10, [3, 3, 4], [7, 0, 3]])
def test_partial_sums_give_the_per_device_rules(cuts):
    ups, weights = random_uploads(10)
    parts, lo = [], 0
    for c in cuts:   # consecutive cohorts (a 0 = a cohort whose devices all dropped out)
        parts.append(reduce_uploads(ups[lo:lo + c], weights[lo:lo + c], SPEC))
        lo += c
    totals = combine_partials(parts, SPEC)
    rows = [SparseRows(u["t.idx"], u["t.val"]) for u in ups]
    sums, counts = totals.rows["t"]
    assert totals.devices == 10 and totals.weight == sum(weights)
    np.testing.assert_allclose(sums / np.maximum(counts, 1)[:, None], sparse_row_mean(N_ROWS, rows),
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sums / totals.devices, sparse_client_mean(N_ROWS, rows),
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(totals.dense["w"] / totals.weight,
                               weighted_mean([u["w"] for u in ups], weights), rtol=1e-12)
    if cuts == [1] * 10:   # one device per cohort: the very same float64 additions
        np.testing.assert_array_equal(sums / np.maximum(counts, 1)[:, None],
                                      sparse_row_mean(N_ROWS, rows))


def test_a_cohort_sends_only_the_rows_its_devices_touched():
    ups, weights = random_uploads(2, seed=3)
    part = reduce_uploads(ups, weights, SPEC)
    touched = np.union1d(ups[0]["t.idx"], ups[1]["t.idx"])
    np.testing.assert_array_equal(part["t.rows"], touched)
    assert part["t.sum"].dtype == np.float64 and part["t.sum"].shape == (len(touched), DIM)
    expected = np.isin(touched, ups[0]["t.idx"]).astype(int) + np.isin(touched, ups[1]["t.idx"])
    np.testing.assert_array_equal(part["t.count"], expected)
    np.testing.assert_array_equal(part["n"], [2, sum(weights)])
    assert set(reduce_uploads([], [], SPEC)) == {"n"}


@pytest.mark.parametrize("cls", [FedMF, FedNCF, PFedRec])
def test_strategy_update_from_cohort_sums_equals_per_device(cls, tmp_path):
    """Four devices trained for real; the cloud's new arrays from per-device replies and
    from two cohorts' sums agree to float32 rounding."""
    st_a, logic = make(cls, tmp_path / "a")
    st_b, _ = make(cls, tmp_path / "b")
    g = {k: v.copy() for k, v in st_a.fit_broadcast(1).items()}   # before the update
    replies = [logic.fit(task(FIT, d, g)) for d in range(4)]
    spec = st_b.reduce_spec()
    assert spec is not None and set(spec["sparse"]) == set(logic.sparse_tables)
    st_a.aggregate(1, replies)
    parts = [reduce_uploads([r.upload for r in rs], [r.num_examples for r in rs], spec)
             for rs in (replies[:3], replies[3:])]
    st_b.aggregate_totals(1, combine_partials(parts, spec))
    assert st_a.global_arrays.keys() == st_b.global_arrays.keys()
    for name, a in st_a.global_arrays.items():
        assert not np.array_equal(a, g[name]) or name not in spec["sparse"]
        np.testing.assert_allclose(st_b.global_arrays[name], a, rtol=1e-6, atol=1e-7)


def test_strategies_that_need_every_upload_ask_for_none(tmp_path):
    assert make(FedMF, tmp_path / "m")[0].reduce_spec() is not None
    assert make(FedAvg, tmp_path / "a")[0].reduce_spec() is None  # own aggregate
    for flat in ({"defence": "median"}, {"ldp": "gaussian"}):
        cls = with_threats(FedMF, parse_threat_config(flat))
        assert make(cls, tmp_path / str(len(flat)))[0].reduce_spec() is None, flat
    attacked = with_threats(FedMF, parse_threat_config({"attack": "fedrecattack",
                                                         "attack-fraction": 0.1}))
    assert make(attacked, tmp_path / "atk")[0].reduce_spec() is not None  # plain mean: sums do
    assert DeviceStrategy.reduce_spec(None) is None                          # plug-in default


def test_host_sends_one_summed_scope_and_charges_each_device_its_own_upload(tmp_path):
    st, logic = make(FedMF, tmp_path / "s")
    spec = st.reduce_spec()
    host = DeviceHost(logic, lambda d: dev.TIERS["pixel2"], seed=9, dropouts=False,
                      state_root=tmp_path)
    g = st.fit_broadcast(1)
    meta = {"devices": [0, 1, 2, 3], "round": 1, "kind": FIT, "shard_size": 4,
            "run": "state", "config": {}}
    plain, _, _ = host.fit(pack(scoped(BROADCAST, g), meta), {})
    summed, _n, _ = host.fit(pack(scoped(BROADCAST, g), {**meta, "reduce": spec,
                                                         "run": "s2"}), {})
    (a, meta_a), (b, meta_b) = unpack(plain), unpack(summed)
    per_device, reduced = split_scopes(a), split_scopes(b)
    assert sorted(per_device) == ["0", "1", "2", "3"] and list(reduced) == [REDUCED]
    assert meta_a["devices"] == meta_b["devices"]               # same reports, same costs
    for d, info in meta_b["devices"].items():
        assert info["costs"]["bytes_up"] == nbytes(per_device[d]) > 0
    expect = reduce_uploads([per_device[str(d)] for d in range(4)],
                            [meta_a["devices"][str(d)]["n"] for d in range(4)], spec)
    assert reduced[REDUCED].keys() == expect.keys()
    for k, v in expect.items():
        np.testing.assert_array_equal(reduced[REDUCED][k], v)
    assert nbytes(reduced[REDUCED]) < sum(nbytes(u) for u in per_device.values())
