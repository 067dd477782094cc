"""The generic vectorised cohort path (torch.func) equals the per-device loop for every
pointwise baseline, and a device's numbers do not depend on its cohort."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clients.batched import CohortAdam, cohort_steps
from clients.device import DeviceLogic
from fedrec.config import parse_run_config
from fedrec.protocol import DeviceTask, device_rng
from fedrec.results import RunRecorder
from strategies.fedavg import FedAvg
from strategies.fedmf import FedMF
from strategies.fedncf import FedNCF
from tests.clients.test_batched_mf import tiny_fed

FLAT = {"local-epochs": 2, "batch-size": 7, "num-negatives": 3, "embedding-dim": 8, "lr": 0.5}


def make(cls, tmp_path, **extra):
    torch.set_num_threads(1)
    cfg = parse_run_config({**FLAT, **extra}, options=cls.options, prefix=cls.prefix)
    fed = tiny_fed()
    return fed, cls.device_cls(cfg, fed), cls(cfg=cfg, fed=fed, recorder=RunRecorder(tmp_path)).global_arrays


def fit_tasks(ids, g):
    return [DeviceTask(d, 3, "fit", g, {}, None, {}, device_rng(1, 3, d, "fit")) for d in ids]


def test_cohort_steps_local_and_global_ids():
    e = [[(np.array([9, 3]), np.ones(2, np.float32))]]
    assert cohort_steps(e, 4).idx[0].tolist() == [[1, 0, -1, -1]]
    assert cohort_steps(e, 4, local_rows=False).idx[0].tolist() == [[9, 3, -1, -1]]
    assert cohort_steps(e, 4).touched[0].tolist() == [3, 9]


@pytest.mark.parametrize("cls", [FedNCF, FedAvg, FedMF])
def test_vectorised_equals_loop(cls, tmp_path):
    fed, logic, g = make(cls, tmp_path)
    ids = list(range(fed.n_devices))
    ref = DeviceLogic.run_many(logic, fit_tasks(ids, g))      # the per-device reference
    vec = logic.run_many(fit_tasks(ids, g))
    for a, b in zip(ref, vec, strict=True):
        assert sorted(a.upload) == sorted(b.upload)
        for k in a.upload:
            np.testing.assert_allclose(a.upload[k], b.upload[k], rtol=1e-5, atol=2e-6)
        for k in a.state:
            np.testing.assert_allclose(a.state[k], b.state[k], rtol=1e-5, atol=2e-6)
        assert a.metrics["loss"] == pytest.approx(b.metrics["loss"], abs=1e-6)
        assert a.num_examples == b.num_examples


def test_fedavg_model_ncf_vectorised(tmp_path):
    _fed, logic, g = make(FedAvg, tmp_path, model="ncf")
    ids = [0, 4, 7]
    ref = DeviceLogic.run_many(logic, fit_tasks(ids, g))
    vec = logic.run_many(fit_tasks(ids, g))
    for a, b in zip(ref, vec, strict=True):
        for k in a.upload:
            np.testing.assert_allclose(a.upload[k], b.upload[k], rtol=1e-5, atol=2e-6)


def test_cohort_size_does_not_change_fedncf(tmp_path):
    fed, logic, g = make(FedNCF, tmp_path)
    ids = list(range(fed.n_devices))
    whole = logic.run_many(fit_tasks(ids, g))
    alone = [logic.run_many(fit_tasks([d], g))[0] for d in ids]
    for a, b in zip(whole, alone, strict=True):
        for k in a.upload:
            np.testing.assert_allclose(a.upload[k], b.upload[k], rtol=1e-5, atol=1e-6)


def test_fedncf_adam_vectorised_equals_loop_whatever_the_cohort(tmp_path):
    """Adam in the cohort path (per-device moments, padding steps masked) equals torch's
    Adam in the per-device loop, and a device's numbers do not depend on its cohort."""
    fed, logic, g = make(FedNCF, tmp_path, **{"fedncf-optimizer": "adam", "lr": 0.01,
                                              "fedncf-item-lr-scale": 1.0})
    ids = list(range(fed.n_devices))
    steps = cohort_steps([[(np.arange(n), np.ones(n, np.float32))] for n in (3, 20)], 7)
    assert (steps.idx[0, -1] < 0).all()          # the cohort path has padding steps to mask
    ref = DeviceLogic.run_many(logic, fit_tasks(ids, g))
    vec = logic.run_many(fit_tasks(ids, g))
    alone = [logic.run_many(fit_tasks([d], g))[0] for d in ids]
    _, sgd, _ = make(FedNCF, tmp_path, lr=0.01, **{"fedncf-item-lr-scale": 1.0})
    plain = sgd.run_many(fit_tasks(ids, g))
    for a, b, c, d in zip(ref, vec, alone, plain, strict=True):
        for k in a.upload:
            np.testing.assert_allclose(b.upload[k], a.upload[k], rtol=1e-4, atol=2e-6)
            np.testing.assert_allclose(c.upload[k], a.upload[k], rtol=1e-4, atol=2e-6)
        for k in a.state:
            np.testing.assert_allclose(b.state[k], a.state[k], rtol=1e-4, atol=2e-6)
        # Adam's first step moves every touched coordinate by ~lr, SGD's by lr * gradient
        assert np.abs(a.upload["item_gmf.weight.val"]).max() > 5 * np.abs(d.upload["item_gmf.weight.val"]).max()


def test_cohort_adam_is_torch_adam_per_device():
    """CohortAdam moving only the active devices at step t equals one torch Adam per device
    that stops after its own number of steps (padding comes only after a device's last step)."""
    gen = torch.Generator().manual_seed(0)
    n_steps = [3, 1, 5]                                          # per device
    start = torch.randn(3, 4, 2, generator=gen)                  # [U, T, D]
    grads = torch.randn(max(n_steps), 3, 4, 2, generator=gen)    # [S, U, T, D]
    cohort = {"w": start.clone()}
    adam = CohortAdam(cohort)
    for s in range(max(n_steps)):
        act = torch.tensor([u for u, n in enumerate(n_steps) if s < n])
        sub = {"w": cohort["w"][act]}
        adam.step(sub, {"w": grads[s, act]}, {"w": 0.03}, s + 1, act)
        cohort["w"][act] = sub["w"]
    for u, n in enumerate(n_steps):
        w = start[u].clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=0.03)
        for s in range(n):
            w.grad = grads[s, u].clone()
            opt.step()
        assert torch.equal(cohort["w"][u], w.detach()), u
        assert torch.equal(adam.m["w"][u], opt.state[w]["exp_avg"])
