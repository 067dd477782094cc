"""Defence mixin on hand-made replies (no Ray): each rule against the robust math it composes,
the protocol's own rule over the survivors, dense parameters via Flower, detection counts."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.server.strategy.aggregate import aggregate_median

from fedrec.ldp import upload_norm
from fedrec.payload import SparseRows, add_sparse, get_sparse
from fedrec.protocol import DeviceReply
from strategies import robust
from tests.clients.threat_cases import build

ITEM, BIAS = "item_emb.weight", "item_bias"


def reply(d: int, idx: list[int], scale: float, seed: int, n: int = 10) -> DeviceReply:
    rng = np.random.default_rng(seed)
    up: dict[str, np.ndarray] = {}
    add_sparse(up, ITEM, SparseRows(np.array(idx), (scale * rng.normal(size=(len(idx), 8))).astype(np.float32)))
    add_sparse(up, BIAS, SparseRows(np.array(idx), (scale * rng.normal(size=(len(idx), 1))).astype(np.float32)))
    return DeviceReply(device_id=d, upload=up, num_examples=n)


def strategies(tmp_path, defence: str, **extra):
    """(defended FedMF, plain FedMF) from the same seed; ground truth from attack=noise 10%."""
    _, defended, _ = build(tmp_path / "d", defence=defence, attack="noise", attack_fraction=0.1, **extra)
    _, plain, _ = build(tmp_path / "p")
    return defended, plain


def replies_with_outlier(outlier: int) -> list[DeviceReply]:
    benign = [reply(d, [1, 2, 3], 0.01, d) for d in (0, 1, 2, 3) if d != outlier]
    return sorted(benign + [reply(outlier, [2, 3, 4], 50.0, 99)], key=lambda r: r.device_id)


def truth(st) -> list[int]:
    return sorted(st.truth)


def test_multi_krum_drops_the_outlier_then_runs_the_protocols_mean(tmp_path) -> None:
    st, plain = strategies(tmp_path, "multi-krum", defence_krum_fraction=0.2)
    bad = truth(st)[0]
    reps = replies_with_outlier(bad)
    metrics = st.aggregate(1, reps)
    plain.aggregate(1, [r for r in reps if r.device_id != bad])
    for name in (ITEM, BIAS):
        np.testing.assert_array_equal(st.global_arrays[name], plain.global_arrays[name])
    assert metrics == {"def_flagged": 1.0, "def_flagged_malicious": 1.0, "malicious": 1.0}


def test_krum_keeps_a_single_upload(tmp_path) -> None:
    st, _ = strategies(tmp_path, "krum")
    reps = replies_with_outlier(truth(st)[0])
    metrics = st.aggregate(1, reps)
    assert metrics["def_flagged"] == len(reps) - 1 and metrics["def_flagged_malicious"] == 1.0


def test_norm_bound_scales_whole_uploads_then_runs_the_protocols_mean(tmp_path) -> None:
    st, plain = strategies(tmp_path, "norm-bound", defence_bound=1.0)
    bad = truth(st)[0]
    reps = replies_with_outlier(bad)
    metrics = st.aggregate(1, reps)
    f = 1.0 / upload_norm(reps[[r.device_id for r in reps].index(bad)].upload)
    scaled = [DeviceReply(device_id=r.device_id, num_examples=r.num_examples,
                          upload={k: v * np.float32(f) if k.endswith(".val") else v
                                  for k, v in r.upload.items()}) if r.device_id == bad else r
              for r in reps]
    plain.aggregate(1, scaled)
    np.testing.assert_allclose(st.global_arrays[ITEM], plain.global_arrays[ITEM], atol=1e-7)
    assert metrics["def_flagged"] == 1.0 and metrics["def_flagged_malicious"] == 1.0


@pytest.mark.parametrize("defence,rule", [
    ("median", robust.coordinate_median),
    ("trimmed-mean", lambda n, u: robust.trimmed_mean(n, u, beta=0.25)),
    ("hics", lambda n, u: robust.hics(n, u, row_bound=0.1, agg_bound=0.05, keep_fraction=0.5)),
])
def test_row_defences_apply_the_robust_rule_per_table(tmp_path, defence: str, rule) -> None:
    st, _ = strategies(tmp_path, defence, defence_beta=0.25)
    reps = replies_with_outlier(truth(st)[0])
    before = {k: v.copy() for k, v in st.global_arrays.items()}
    st.aggregate(1, reps)
    for name in (ITEM, BIAS):
        delta, _ = rule(len(before[name]), [get_sparse(r.upload, name) for r in reps])
        want = (before[name].astype(np.float64) + delta.reshape(before[name].shape)).astype(np.float32)
        np.testing.assert_array_equal(st.global_arrays[name], want)


def test_hics_flags_devices_with_clipped_rows(tmp_path) -> None:
    st, _ = strategies(tmp_path, "hics")
    metrics = st.aggregate(1, replies_with_outlier(truth(st)[0]))
    assert metrics == {"def_flagged": 1.0, "def_flagged_malicious": 1.0, "malicious": 1.0}


def test_median_on_dense_parameters_is_flowers(tmp_path) -> None:
    _, st, logic = build(tmp_path, strategy="fedncf", defence="median")
    dense = [n for n in st.global_arrays if n not in logic.sparse_tables]
    rng = np.random.default_rng(0)
    reps = []
    for d in range(3):
        up = {n: rng.normal(size=st.global_arrays[n].shape).astype(np.float32) for n in dense}
        for n in logic.sparse_tables:
            add_sparse(up, n, SparseRows(np.array([d]), np.ones((1, st.global_arrays[n].shape[1]), np.float32)))
        reps.append(DeviceReply(device_id=d, upload=up, num_examples=5 + d))
    before = {n: st.global_arrays[n].copy() for n in dense}
    st.aggregate(1, reps)
    for n in dense:
        med = aggregate_median([([r.upload[n].astype(np.float64)], 1) for r in reps])[0]
        np.testing.assert_array_equal(st.global_arrays[n], (before[n] + med).astype(np.float32))


def test_non_finite_uploads_are_dropped_and_counted(tmp_path) -> None:
    st, _ = strategies(tmp_path, "median")
    reps = [reply(0, [1, 2], 0.1, 0), reply(1, [1, 2], 0.1, 1), reply(2, [2, 3], 0.1, 2)]
    reps[2].upload[ITEM + ".val"][0, 0] = np.nan
    metrics = st.aggregate(1, reps)
    assert metrics["def_flagged"] == 1.0 and np.all(np.isfinite(st.global_arrays[ITEM]))
