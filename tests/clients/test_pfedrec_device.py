"""PFedRec on the device: the alternating update against the authors' two-optimiser form,
options, and the vectorised cohort path against the per-device loop."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from clients.pfedrec_device import (
    PERSONAL,
    PFedRecConfig,
    PFedRecDevice,
    alternating_step,
    item_lr,
    train_alternating,
)
from clients.trainer import LocalTrainConfig
from fedrec.config import parse_run_config, parse_section
from fedrec.data.schema import make_interactions
from fedrec.data.splits import leave_one_out
from fedrec.errors import ConfigError
from fedrec.federated import LeaveOneOutData
from fedrec.models import PFedRecModel
from fedrec.models.base import Batch
from fedrec.protocol import EVALUATE, FIT, DeviceTask, device_rng


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def tiny_fed(n_users: int = 10, n_items: int = 30, seed: int = 4) -> LeaveOneOutData:
    """Users with 4..20 interactions, so cohorts mix 1-step and multi-step devices."""
    rng = np.random.default_rng(seed)
    users, items, ts = [], [], []
    for u in range(n_users):
        k = int(rng.integers(4, 21))
        users += [u] * k
        items += rng.choice(n_items, size=k, replace=False).tolist()
        ts += list(range(k))
    df = make_interactions(np.array(users), np.array(items), np.array(ts))
    return LeaveOneOutData(leave_one_out(df), "sampled", 6, seed)


def device(**extra) -> PFedRecDevice:
    flat = {"strategy": "pfedrec", "local-epochs": 2, "batch-size": 5, "num-negatives": 2,
            "embedding-dim": 4, "lr": 0.5, "pfedrec-lr-eta": 0.2, **extra}
    return PFedRecDevice(parse_run_config(flat, options=PFedRecConfig, prefix="pfedrec-"),
                         tiny_fed())


def reference_step(model: PFedRecModel, items: torch.Tensor, labels: torch.Tensor,
                   lr: float, lr_item: float) -> float:
    """The authors' engine.fed_train_single_batch: two torch SGD optimisers, sigmoid + BCELoss."""
    opt = torch.optim.SGD(model.score_fn.parameters(), lr=lr)
    opt_i = torch.optim.SGD(model.item_emb.parameters(), lr=lr_item)
    crit = torch.nn.BCELoss()
    forward = lambda: torch.sigmoid(model.score_fn(model.item_emb(items))).view(-1)
    opt.zero_grad()
    crit(forward(), labels).backward()
    opt.step()
    opt_i.zero_grad()
    loss_i = crit(forward(), labels)
    loss_i.backward()
    opt_i.step()
    return loss_i.item()


def test_alternating_step_equals_two_optimiser_reference():
    ours = PFedRecModel(n_items=6, dim=3, seed=0)
    ref = copy.deepcopy(ours)
    batches = [([0, 2, 2, 5], [1, 0, 0, 1]), ([1, 3], [0, 1]), ([5, 4, 0], [1, 1, 0])]
    for items, labels in batches:
        it, y = torch.tensor(items), torch.tensor(labels, dtype=torch.float32)
        got = alternating_step(ours, Batch(items=it, labels=y), lr=0.3, lr_item=7.0)
        want = reference_step(ref, it, y, lr=0.3, lr_item=7.0)
        assert got == pytest.approx(want, abs=1e-6)
    for (name, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    assert ours.item_emb.weight[[1, 3]].ne(PFedRecModel(n_items=6, dim=3, seed=0)
                                           .item_emb.weight[[1, 3]]).any()


def test_alternating_step_moves_score_function_before_item_rows():
    """Step 2's gradient uses the already-updated score function: compare with hand numbers.

    D = 1, w = 0.5, b = 0, q = [1.0], one positive: z = 0.5, g = sigmoid(0.5) - 1.
    """
    m = PFedRecModel(n_items=1, dim=1, seed=0)
    with torch.no_grad():
        m.item_emb.weight.fill_(1.0)
        m.score_fn[1].weight.fill_(0.5)
        m.score_fn[1].bias.fill_(0.0)
    alternating_step(m, Batch(items=torch.tensor([0]), labels=torch.tensor([1.0])), 0.1, 2.0)
    g = 1 / (1 + np.exp(-0.5)) - 1
    w, b = 0.5 - 0.1 * g * 1.0, -0.1 * g
    g2 = 1 / (1 + np.exp(-(w + b))) - 1
    assert m.score_fn[1].weight.item() == pytest.approx(w, abs=1e-7)
    assert m.score_fn[1].bias.item() == pytest.approx(b, abs=1e-7)
    assert m.item_emb.weight.item() == pytest.approx(1.0 - 2.0 * g2 * w, abs=1e-6)


def test_train_alternating_reports_touched_and_examples():
    fed = tiny_fed()
    model = PFedRecModel(n_items=fed.n_items, dim=4, seed=1)
    before = model.item_emb.weight.detach().clone()
    data = fed.device(3)
    cfg = LocalTrainConfig(epochs=2, lr=0.5, batch_size=5, num_negatives=2)
    loss, touched, seen = train_alternating(model, data, cfg, 3.0, np.random.default_rng(0))
    pos = np.unique(data.train_items)
    assert seen == 2 * 3 * len(pos) and set(pos) <= set(touched)
    changed = (model.item_emb.weight.detach() != before).any(1).nonzero().ravel().numpy()
    assert set(changed) <= set(touched) and set(pos) <= set(changed)
    assert 0 < loss < 5


def test_item_learning_rate_and_options():
    assert item_lr(0.1, 3706, PFedRecConfig()) == pytest.approx(0.1 * 80 * 3706)
    assert item_lr(0.1, 3706, PFedRecConfig(lr_eta=2.0, scale_by_items=False)) == pytest.approx(0.2)
    got = parse_section(PFedRecConfig, {"pfedrec-lr-eta": "3", "pfedrec-vectorised": "false",
                                        "lr-eta": 99}, "pfedrec-")
    assert got == PFedRecConfig(lr_eta=3.0, scale_by_items=True, vectorised=False)
    with pytest.raises(ConfigError, match="pfedrec-lr-eta"):
        PFedRecConfig(lr_eta=0)
    assert device().item_lr == pytest.approx(0.5 * 0.2 * 30)


def test_every_device_starts_from_the_same_score_function():
    dev = device()
    a, b = dev.private_init(0), dev.private_init(7)
    assert set(a) == {"score_fn.1.weight", "score_fn.1.bias"}
    assert all(np.array_equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- vectorised == loop
def tasks(kind: str, ids: list[int], broadcast, states=None) -> list[DeviceTask]:
    return [DeviceTask(d, 2, kind, broadcast, {}, (states or {}).get(d), {},
                       device_rng(5, 2, d, kind)) for d in ids]


def close(a: dict, b: dict, atol: float = 1e-5) -> bool:
    return a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


def table(dev: PFedRecDevice, seed: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"item_emb.weight": rng.normal(0, 0.3, (dev.fed.n_items, 4)).astype(np.float32)}


@pytest.mark.parametrize("with_state", [False, True])
def test_vectorised_fit_equals_per_device_loop(with_state):
    dev = device()
    g = table(dev)
    ids = list(range(dev.fed.n_devices))
    states = None
    if with_state:   # second round: own score functions and personal rows from round 1
        states = {r.device_id: r.state for r in dev.run_many(tasks(FIT, ids, table(dev, 9)))}
    vec = dev.run_many(tasks(FIT, ids, g, states))
    loop = [dev.fit(t) for t in tasks(FIT, ids, g, states)]
    assert len({int(r.upload["item_emb.weight.idx"].size) for r in loop}) > 1
    for v, lo in zip(vec, loop, strict=True):
        assert v.device_id == lo.device_id and v.num_examples == lo.num_examples
        assert v.upload["item_emb.weight.idx"].tolist() == lo.upload["item_emb.weight.idx"].tolist()
        assert close(v.upload, lo.upload) and close(v.state, lo.state)
        assert v.metrics["loss"] == pytest.approx(lo.metrics["loss"], abs=1e-5)
        assert v.flops == lo.flops


def test_vectorised_fit_does_not_depend_on_the_cohort_or_consume_rngs():
    dev = device()
    g = table(dev)
    ts = tasks(FIT, [1, 4, 6], g)
    states_before = [t.rng.bit_generator.state for t in ts]
    together = dev.run_many(ts)
    assert [t.rng.bit_generator.state for t in ts] == states_before
    alone = [dev.run_many(tasks(FIT, [d], g))[0] for d in (1, 4, 6)]
    for a, b in zip(together, alone, strict=True):
        assert close(a.upload, b.upload, atol=1e-6) and close(a.state, b.state, atol=1e-6)


def test_vectorised_evaluation_equals_loop():
    dev = device()
    g = table(dev)
    ids = list(range(dev.fed.n_devices))
    states = {r.device_id: r.state for r in dev.run_many(tasks(FIT, ids, g))}
    states.pop(2)                        # a device that never trained: initial score function
    assert f"{PERSONAL}.idx" in states[0]
    vec = dev.run_many(tasks(EVALUATE, ids, g, states))
    loop = [dev.evaluate(t) for t in tasks(EVALUATE, ids, g, states)]
    assert [v.metrics for v in vec] == [lo.metrics for lo in loop]
    assert len({v.metrics["test_ndcg@10"] for v in vec}) > 1


def test_unvectorised_cohorts_run_pfedrecs_own_per_device_loop():
    # pfedrec-vectorised=false once trained cohorts with EmbeddingDevice's generic trainer
    # (one lr for everything, no item-lr scaling): it must be PFedRec's own fit, device by device
    dev = device()
    dev.pcfg = dataclasses.replace(dev.pcfg, vectorised=False)
    g = table(dev)
    ids = list(range(dev.fed.n_devices))
    cohort = dev.run_many(tasks(FIT, ids, g))
    loop = [dev.fit(t) for t in tasks(FIT, ids, g)]
    for c, lo in zip(cohort, loop, strict=True):
        assert c.upload.keys() == lo.upload.keys()
        assert all(np.array_equal(c.upload[k], lo.upload[k]) for k in c.upload)
        assert c.metrics == lo.metrics and c.num_examples == lo.num_examples
