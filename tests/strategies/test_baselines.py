"""FedAvg, FedNCF and PFedRec: aggregation on hand-made replies (no Ray), Flower equivalence,
privacy of uploads, and one device's fit/evaluate on a tiny leave-one-out split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.server.strategy.aggregate import aggregate as flwr_aggregate

from clients.trainer import evaluate_local, local_examples
from fedrec.config import parse_run_config
from fedrec.data.schema import make_interactions
from fedrec.data.splits import leave_one_out
from fedrec.errors import ConfigError
from fedrec.federated import LeaveOneOutData
from fedrec.payload import SparseRows, add_sparse
from fedrec.protocol import EVALUATE, FIT, DeviceReply, DeviceTask, device_rng
from fedrec.results import RunRecorder
from strategies.aggregation import sparse_row_sums
from strategies.fedavg import FedAvg, blockwise_weighted_mean
from strategies.fedncf import FedNCF
from strategies.pfedrec import PFedRec
from strategies.registry import STRATEGIES, resolve_strategy

# user -> chronological items (last = test, second-last = valid); 12 items in all
TABLE = {0: [0, 1, 2, 3, 4], 1: [2, 5, 6, 7], 2: [8, 9, 10, 11, 0, 1], 3: [3, 4, 5]}
N_ITEMS = 12


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)   # tiny models: threads only contend (2 shared cores here)


def tiny_fed(negatives: int = 4) -> LeaveOneOutData:
    users = np.concatenate([[u] * len(v) for u, v in TABLE.items()])
    items = np.concatenate(list(TABLE.values()))
    ts = np.concatenate([np.arange(len(v)) for v in TABLE.values()])
    return LeaveOneOutData(leave_one_out(make_interactions(users, items, ts)), "sampled",
                           negatives, seed=1)


def config(strategy: str, **extra):
    flat = {"strategy": strategy, "local-epochs": 2, "batch-size": 3, "num-negatives": 2,
            "embedding-dim": 4, "lr": 0.3, "pfedrec-lr-eta": 0.1, **extra}
    cls = STRATEGIES[strategy]
    return parse_run_config(flat, extra_keys={"pfedrec-*"}, options=cls.options, prefix=cls.prefix)


def make(cls, tmp_path, **extra):
    cfg = config(cls.name, **extra)
    fed = tiny_fed()
    return cls(cfg=cfg, fed=fed, recorder=RunRecorder(tmp_path)), cls.device_cls(cfg, fed)


def task(kind: str, device: int, broadcast, state=None) -> DeviceTask:
    return DeviceTask(device, 1, kind, broadcast, {}, state, {}, device_rng(9, 1, device, kind))


def rows(idx: list[int], val: list[list[float]]) -> SparseRows:
    return SparseRows(np.array(idx), np.array(val, np.float32))


# ---------------------------------------------------------------- registry and config
def test_registry_holds_the_four_baselines():
    assert set(STRATEGIES) >= {"fedavg", "fedmf", "fedncf", "pfedrec"}
    assert resolve_strategy("fedncf") is FedNCF and resolve_strategy("pfedrec") is PFedRec


@pytest.mark.parametrize("cls, wrong", [(FedNCF, "mf"), (PFedRec, "ncf")])
def test_strategy_rejects_a_model_it_does_not_train(cls, wrong, tmp_path):
    with pytest.raises(ConfigError, match=f"model='{wrong}'"):
        make(cls, tmp_path, model=wrong)


# ---------------------------------------------------------------- aggregation, hand-made replies
@pytest.mark.parametrize("idx", [[1, 3, 3], [3, 1, 3], [2, 2]])
def test_sparse_row_sums_rejects_repeated_rows_sorted_or_not(idx):
    with pytest.raises(ValueError, match="must be unique within one device's upload"):
        sparse_row_sums(5, [rows([0], [[1.0]]), rows(idx, [[1.0]] * len(idx))])


def test_sparse_row_sums_adds_in_order_and_counts_devices():
    sums, counts = sparse_row_sums(4, [rows([3, 0], [[1.0], [2.0]]), rows([0, 1], [[0.5], [4.0]])])
    assert sums[:, 0].tolist() == [2.5, 4.0, 0.0, 1.0] and counts.tolist() == [2, 1, 0, 1]


def test_fedavg_aggregate_is_example_weighted_mean_of_dense_deltas(tmp_path):
    st, _ = make(FedAvg, tmp_path)
    st.global_arrays = {"E": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32),
                        "b": np.array([0.5, 0.0], np.float32)}
    replies = [
        DeviceReply(0, upload={"E": np.array([[4.0, 0], [0, 0]], np.float32),
                               "b": np.array([1.0, 1.0], np.float32)}, num_examples=1),
        DeviceReply(1, upload={"E": np.array([[0, 0], [8.0, -4.0]], np.float32),
                               "b": np.array([-1.0, 3.0], np.float32)}, num_examples=3),
    ]
    st.aggregate(1, replies)
    # (1 * d0 + 3 * d1) / 4 added to the global arrays
    assert st.global_arrays["E"].tolist() == [[2.0, 2.0], [9.0, 1.0]]
    assert st.global_arrays["b"].tolist() == [0.0, 2.5]
    assert st.global_arrays["E"].dtype == np.float32


def test_fedavg_equals_flowers_aggregate_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    st, _ = make(FedAvg, tmp_path)
    g = rng.normal(size=(50, 3)).astype(np.float32)
    st.global_arrays = {"E": g}
    deltas = [rng.normal(size=(50, 3)).astype(np.float32) for _ in range(7)]
    weights = [int(w) for w in rng.integers(1, 100, size=7)]
    st.aggregate(1, [DeviceReply(i, upload={"E": d}, num_examples=w)
                     for i, (d, w) in enumerate(zip(deltas, weights, strict=True))])
    pairs = zip(deltas, weights, strict=True)
    want = flwr_aggregate([([d.astype(np.float64)], w) for d, w in pairs])[0]
    assert np.array_equal(st.global_arrays["E"], (g.astype(np.float64) + want).astype(np.float32))
    # row blocks of any size give Flower's exact bits (the op is elementwise)
    for budget in (1, 7 * 3 * 4, 10**9):
        assert np.array_equal(blockwise_weighted_mean(deltas, weights, budget), want)


def test_blockwise_mean_handles_vectors_and_scalars():
    got = blockwise_weighted_mean([np.array([1.0, 2.0]), np.array([3.0, 6.0])], [1, 1], budget=1)
    assert got.tolist() == [2.0, 4.0]
    got = blockwise_weighted_mean([np.array(1.0), np.array(4.0)], [2, 1])
    assert got.shape == () and float(got) == 2.0


def test_fedncf_item_rows_per_row_mean_layers_weighted(tmp_path):
    st, _ = make(FedNCF, tmp_path)
    st.global_arrays = {"item_gmf.weight": np.zeros((3, 1), np.float32),
                        "item_mlp.weight": np.ones((3, 1), np.float32),
                        "out.bias": np.array([1.0], np.float32)}

    def up(gmf, mlp, bias):
        out: dict[str, np.ndarray] = {"out.bias": np.array([bias], np.float32)}
        add_sparse(out, "item_gmf.weight", rows(*gmf))
        add_sparse(out, "item_mlp.weight", rows(*mlp))
        return out

    replies = [DeviceReply(0, upload=up(([0, 2], [[2.0], [4.0]]), ([1], [[6.0]]), 4.0),
                           num_examples=3),
               DeviceReply(1, upload=up(([2], [[8.0]]), ([1], [[-2.0]]), 0.0), num_examples=1)]
    st.aggregate(1, replies)
    # row 0: only device 0 -> 2; row 1: nobody -> 0; row 2: (4 + 8) / 2
    assert st.global_arrays["item_gmf.weight"].ravel().tolist() == [2.0, 0.0, 6.0]
    assert st.global_arrays["item_mlp.weight"].ravel().tolist() == [1.0, 3.0, 1.0]
    assert st.global_arrays["out.bias"].tolist() == [1.0 + (3 * 4.0 + 1 * 0.0) / 4]


def test_fedncf_item_tables_take_scaled_steps(tmp_path):
    """One SGD step (one batch, one epoch): item-row changes scale with fedncf-item-lr-scale,
    layer changes do not."""
    one_step = {"batch-size": 1000, "local-epochs": 1}
    st, base = make(FedNCF, tmp_path, **one_step, **{"fedncf-item-lr-scale": 1.0})
    _, scaled = make(FedNCF, tmp_path, **one_step, **{"fedncf-item-lr-scale": 4.0})
    assert scaled.lrs() == {"item_gmf.weight": 1.2, "item_mlp.weight": 1.2,
                            "user_gmf.weight": 0.3, "user_mlp.weight": 0.3}
    g = st.fit_broadcast(1)
    a, b = base.fit(task(FIT, 0, g)), scaled.fit(task(FIT, 0, g))
    for name in ("item_gmf.weight.val", "item_mlp.weight.val"):
        assert np.abs(a.upload[name]).max() > 0
        np.testing.assert_allclose(b.upload[name], 4.0 * a.upload[name], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(b.upload["mlp.0.weight"], a.upload["mlp.0.weight"])


def test_fedncf_user_embeddings_take_scaled_steps(tmp_path):
    """One SGD step: the private user vectors move ``fedncf-user-lr-scale`` times as far,
    the shared uploads do not change."""
    one_step = {"batch-size": 1000, "local-epochs": 1}
    st, base = make(FedNCF, tmp_path, **one_step)
    _, scaled = make(FedNCF, tmp_path, **one_step, **{"fedncf-user-lr-scale": 5.0})
    g = st.fit_broadcast(1)
    a, b = base.fit(task(FIT, 0, g)), scaled.fit(task(FIT, 0, g))
    init = base.private_init(0)
    for name in ("user_gmf.weight", "user_mlp.weight"):
        step = a.state[name] - init[name]
        assert np.abs(step).max() > 0
        np.testing.assert_allclose(b.state[name] - init[name], 5.0 * step, rtol=1e-4, atol=1e-7)
    for name in a.upload:
        np.testing.assert_array_equal(b.upload[name], a.upload[name])


def test_pfedrec_mean_of_item_tables_over_participants(tmp_path):
    st, _ = make(PFedRec, tmp_path)
    g = np.array([[1.0], [1.0], [1.0]], np.float32)
    st.global_arrays = {"item_emb.weight": g}
    sent = st.fit_broadcast(1)
    replies = []
    for d, (idx, val) in enumerate([([0, 2], [[2.0], [4.0]]), ([2], [[8.0]])]):
        u: dict[str, np.ndarray] = {}
        add_sparse(u, "item_emb.weight", rows(idx, val))
        replies.append(DeviceReply(d, upload=u, num_examples=10 * (d + 1)))
    st.aggregate(1, replies)
    # untouched rows count as unchanged tables: sum of changes / 2 devices (weights ignored)
    assert st.global_arrays["item_emb.weight"].ravel().tolist() == [2.0, 1.0, 7.0]
    # evaluation uses the table the devices trained from, not the aggregated one
    assert st.eval_broadcast(1)["item_emb.weight"] is g and sent["item_emb.weight"] is g


# ---------------------------------------------------------------- one device, tiny split
CASES = [(FedAvg, {}), (FedAvg, {"model": "ncf"}), (FedAvg, {"model": "pfedrec"}),
         (FedNCF, {}), (PFedRec, {}), (PFedRec, {"pfedrec-vectorised": False})]


def uploaded_names(upload: dict[str, np.ndarray]) -> set[str]:
    return {k.removesuffix(".idx").removesuffix(".val") for k in upload}


@pytest.mark.parametrize("cls, extra", CASES)
def test_uploads_carry_exactly_the_shared_parameters(cls, extra, tmp_path):
    st, dev = make(cls, tmp_path, **extra)
    replies = dev.run_many([task(FIT, d, st.fit_broadcast(1)) for d in range(4)])
    private = dev.model.private_parameter_names()
    assert private  # every baseline keeps something on the device
    for r in replies:
        assert r.status == "ok"
        assert uploaded_names(r.upload) == set(st.global_arrays)
        assert not uploaded_names(r.upload) & private
        assert private <= set(r.state)


@pytest.mark.parametrize("cls, extra", CASES)
def test_device_fit_touches_own_items_and_counts_examples(cls, extra, tmp_path):
    st, dev = make(cls, tmp_path, **extra)
    g = st.fit_broadcast(1)
    (r,) = dev.run_many([task(FIT, 2, g)])
    positives = np.unique(dev.fed.device(2).train_items)        # items 8, 9, 10, 11
    assert positives.tolist() == [8, 9, 10, 11]
    assert r.num_examples == 2 * len(positives) * (1 + 2)      # epochs x P x (1 + negatives)
    assert np.isfinite(r.metrics["loss"]) and r.metrics["loss"] > 0
    rng = device_rng(9, 1, 2, FIT)                             # replay the device's draws
    touched = np.unique(np.concatenate(
        [local_examples(dev.fed.device(2), N_ITEMS, 2, rng)[0] for _ in range(2)]))
    table = next(n for n in g if "item" in n and n.endswith("weight"))
    if f"{table}.idx" in r.upload:                             # sparse: exactly the touched rows
        assert r.upload[f"{table}.idx"].tolist() == touched.tolist()
    else:                                                      # dense: other rows exactly 0
        changed = np.flatnonzero(np.abs(r.upload[table]).sum(1))
        assert set(positives) <= set(changed) <= set(touched)
        assert r.upload[table].shape == g[table].shape


@pytest.mark.parametrize("cls, extra", CASES)
def test_device_evaluate_reports_both_splits(cls, extra, tmp_path):
    st, dev = make(cls, tmp_path, **extra)
    (fit,) = dev.run_many([task(FIT, 1, st.fit_broadcast(1))])
    (ev,) = dev.run_many([task(EVALUATE, 1, st.eval_broadcast(1), fit.state)])
    assert ev.status == "ok" and ev.upload == {}
    for split in ("valid", "test"):
        assert 0.0 <= ev.metrics[f"{split}_ndcg@10"] <= ev.metrics[f"{split}_hr@10"] <= 1.0
    # 4 negatives + target: HR@10 is 1 for every device
    assert ev.metrics["test_hr@10"] == 1.0 and ev.metrics["test_mrr@20"] >= 0.2


@pytest.mark.parametrize("vectorised", [True, False])
def test_pfedrec_evaluates_the_model_it_ended_training_with(vectorised, tmp_path):
    st, dev = make(PFedRec, tmp_path, **{"eval-negatives": 4, "pfedrec-vectorised": vectorised})
    g = st.fit_broadcast(1)
    fit = dev.fit(task(FIT, 0, g))
    trained = evaluate_local(dev.model, dev.fed.device(0))       # the device's model right now
    st.aggregate(1, [fit])
    assert not np.array_equal(st.global_arrays["item_emb.weight"], g["item_emb.weight"])
    (ev,) = dev.run_many([task(EVALUATE, 0, st.eval_broadcast(1), fit.state)])
    assert ev.metrics == trained


@pytest.mark.parametrize("key", ["fedncf-item-lr-scale", "fedncf-user-lr-scale"])
def test_fedncf_rejects_non_positive_lr_scale(tmp_path, key):
    with pytest.raises(ConfigError, match=f"{key} must be > 0"):
        make(FedNCF, tmp_path, **{key: 0.0})


def test_fedncf_rejects_an_unknown_optimizer(tmp_path):
    with pytest.raises(ConfigError, match="fedncf-optimizer='adamw': use one of sgd, adam"):
        make(FedNCF, tmp_path, **{"fedncf-optimizer": "adamw"})
