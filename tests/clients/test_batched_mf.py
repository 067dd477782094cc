"""The vectorised FedMF cohort path gives the per-device torch loop's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clients.batched_mf import batch_steps, build_inputs
from clients.embedding import EmbeddingDevice
from fedrec.config import parse_run_config
from fedrec.data.schema import make_interactions
from fedrec.data.splits import leave_one_out
from fedrec.federated import LeaveOneOutData
from fedrec.protocol import DeviceTask, device_rng
from fedrec.results import RunRecorder
from strategies.fedmf import FedMF, FedMFDevice


def tiny_fed(n_users: int = 12, n_items: int = 40, seed: int = 3) -> LeaveOneOutData:
    rng = np.random.default_rng(seed)
    users, items, ts = [], [], []
    for u in range(n_users):
        k = int(rng.integers(4, 25))
        chosen = rng.choice(n_items, size=k, replace=False)
        users += [u] * k
        items += chosen.tolist()
        ts += list(range(k))
    df = make_interactions(np.array(users), np.array(items), np.array(ts))
    return LeaveOneOutData(leave_one_out(df), "sampled", 5, seed)


@pytest.fixture()
def setup(tmp_path):
    torch.set_num_threads(1)
    flat = {"local-epochs": 2, "batch-size": 7, "num-negatives": 3, "embedding-dim": 8, "lr": 0.5}
    cfg = parse_run_config(flat)
    fed = tiny_fed()
    strategy = FedMF(cfg=cfg, fed=fed, recorder=RunRecorder(tmp_path))
    return cfg, fed, FedMFDevice(cfg, fed), strategy.global_arrays


def tasks(kind, ids, g, states=None):
    return [DeviceTask(d, 2, kind, g, {}, (states or {}).get(d), {}, device_rng(5, 2, d, kind))
            for d in ids]


def test_batch_steps_pads_last_batch():
    idx, lab = batch_steps(np.array([4, 5, 6, 7, 8]), np.array([1, 0, 1, 0, 0], np.float32), 2)
    assert idx.tolist() == [[4, 5], [6, 7], [8, -1]]
    assert lab.tolist() == [[1, 0], [1, 0], [0, 0]]


def test_build_inputs_local_rows_and_offsets():
    e = [[(np.array([9, 3, 9]), np.ones(3, np.float32))], [(np.array([5]), np.zeros(1, np.float32))]]
    inp = build_inputs([np.zeros(2), np.ones(2)], e, batch=2)
    assert inp.rows.tolist() == [3, 9, 5]
    assert inp.owner_offsets.tolist() == [0, 2, 3]
    assert inp.steps_idx[0].tolist() == [[1, 0], [1, -1]]
    assert inp.steps_idx[1].tolist() == [[2, -1], [-1, -1]]
    assert inp.last_epoch.tolist() == [[True, True], [True, False]]


def test_build_inputs_epochs_start_new_batches_and_last_epoch_flags():
    def ex(items, labels):
        return np.array(items), np.array(labels, np.float32)

    e = [[ex([7, 2, 7], [1, 1, 1]), ex([4], [0])], [ex([1], [1]), ex([1, 9], [1, 1])]]
    inp = build_inputs([np.zeros(2), np.ones(2)], e, batch=2)
    assert inp.rows.tolist() == [2, 4, 7, 1, 9] and inp.owner_offsets.tolist() == [0, 3, 5]
    assert inp.steps_idx[0].tolist() == [[2, 0], [2, -1], [1, -1]]
    assert inp.steps_idx[1].tolist() == [[3, -1], [3, 4], [-1, -1]]
    assert inp.steps_lab[0].tolist() == [[1, 1], [1, 0], [0, 0]]
    assert inp.last_epoch.tolist() == [[False, False, True], [False, True, False]]


def test_cohort_fit_equals_per_device_loop(setup):
    _cfg, fed, logic, g = setup
    ids = list(range(fed.n_devices))
    ref = [EmbeddingDevice.fit(logic, t) for t in tasks("fit", ids, g)]
    vec = logic.run_many(tasks("fit", ids, g))
    for a, b in zip(ref, vec, strict=True):
        assert a.upload.keys() == b.upload.keys()
        for k in a.upload:
            np.testing.assert_allclose(a.upload[k], b.upload[k], atol=1e-5)
        np.testing.assert_allclose(a.state["user_emb.weight"], b.state["user_emb.weight"], atol=1e-5)
        assert a.metrics["loss"] == pytest.approx(b.metrics["loss"], abs=1e-5)
        assert a.num_examples == b.num_examples


def test_cohort_size_does_not_change_numbers(setup):
    _cfg, fed, logic, g = setup
    ids = list(range(fed.n_devices))
    whole = logic.run_many(tasks("fit", ids, g))
    single = [logic.run_many(tasks("fit", [d], g))[0] for d in ids]
    for a, b in zip(whole, single, strict=True):
        for k in a.upload:
            np.testing.assert_allclose(a.upload[k], b.upload[k], atol=1e-6)


def test_cohort_evaluate_equals_loop(setup):
    _cfg, fed, logic, g = setup
    ids = list(range(fed.n_devices))
    states = {r.device_id: r.state for r in logic.run_many(tasks("fit", ids, g))}
    ref = [EmbeddingDevice.evaluate(logic, t) for t in tasks("evaluate", ids, g, states)]
    vec = logic.run_many(tasks("evaluate", ids, g, states))
    for a, b in zip(ref, vec, strict=True):
        assert a.metrics.keys() == b.metrics.keys()
        for k in a.metrics:
            assert a.metrics[k] == pytest.approx(b.metrics[k], abs=1e-9)


def test_uploads_hold_only_touched_item_rows(setup):
    _cfg, fed, logic, g = setup
    reply = logic.run_many(tasks("fit", [0], g))[0]
    assert sorted(reply.upload) == ["item_bias.idx", "item_bias.val",
                                    "item_emb.weight.idx", "item_emb.weight.val"]
    own = set(fed.device(0).train_items.tolist())
    assert own <= set(reply.upload["item_emb.weight.idx"].tolist())
    assert "user_emb.weight" not in reply.upload
