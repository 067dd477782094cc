"""DCCL's training steps: the KL term, row-wise Adam, MetaPatch of a cohort = per device,
and the cloud's rows of a round = the devices' rows of that round."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrec.dccl.data import CTRRows, cloud_rows, device_rows, interval_of, log_histories
from fedrec.dccl.train import adam_rows, bernoulli_kl, distill_loss, metapatch_fit
from fedrec.models.patched_din import PatchedDIN


def test_bernoulli_kl_by_hand():
    t, s = torch.tensor([0.3, -1.0]), torch.tensor([0.3, 2.0])
    p, q = torch.sigmoid(t), torch.sigmoid(s)
    want = p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))
    torch.testing.assert_close(bernoulli_kl(t, s), want)
    assert float(bernoulli_kl(t, s)[0]) == pytest.approx(0.0, abs=1e-7)
    labels = torch.tensor([1.0, 0.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(s, labels)
    torch.testing.assert_close(distill_loss(s, labels, t, 0.5), bce + 0.5 * want.mean())
    torch.testing.assert_close(distill_loss(s, labels, t, 0.0), bce)


def test_adam_rows_is_torch_adam_for_the_rows_it_moves():
    theta = torch.zeros(3, 4)
    state = {"t": torch.zeros(3), "m": torch.zeros(3, 4), "v": torch.zeros(3, 4)}
    ref = torch.zeros(4, requires_grad=True)
    opt = torch.optim.Adam([ref], lr=0.1)
    for step in range(3):
        g = torch.arange(4.0) - step
        adam_rows(theta, g[None], state, torch.tensor([1]), 0.1)
        ref.grad = g.clone()
        opt.step()
    # torch computes the bias corrections in float64, these are float32 per-row tensors
    torch.testing.assert_close(theta[1], ref.detach(), rtol=1e-4, atol=1e-6)
    assert float(theta[0].abs().sum()) == 0 and float(theta[2].abs().sum()) == 0


def rows(rng, dev: int, n: int) -> CTRRows:
    hist = np.where(rng.random((n, 6)) < 0.7, rng.integers(0, 40, (n, 6)), -1)
    return CTRRows(np.full(n, dev), rng.integers(0, 40, n), (rng.random(n) < 0.5).astype(np.float32),
                   hist)


def test_metapatch_of_a_cohort_equals_the_per_device_loop():
    torch.set_num_threads(1)
    m = PatchedDIN(n_items=40, categories=np.arange(40) % 3, profile_sizes=(2,), meta_dim=8,
                   hidden=(8, 4, 8), attention_hidden=(8,), seed=0)
    rng = np.random.default_rng(0)
    D = 5
    per = [[rows(rng, d, 5 * d), rows(rng, d, 5 * d)] for d in range(D)]      # device 0: none
    prof = rng.integers(0, 2, (D, 1))
    theta0 = torch.randn(D, 8) * 0.1
    theta, loss = metapatch_fit(m, per, prof, theta0, lr=0.05, batch=4)
    assert torch.equal(theta[0], theta0[0]) and np.isnan(loss[0])           # no rows: unchanged
    for d in range(1, D):
        one, l1 = metapatch_fit(m, [per[d]], prof[d:d + 1], theta0[d:d + 1], lr=0.05, batch=4)
        torch.testing.assert_close(one[0], theta[d], rtol=1e-5, atol=1e-6)
        assert l1[0] == pytest.approx(loss[d], rel=1e-5)
        assert float((theta[d] - theta0[d]).abs().max()) > 1e-3            # it trained
    assert all(p.requires_grad for p in m.parameters())                     # f restored


def test_intervals_cut_each_users_half_in_equal_time_ordered_parts():
    assert interval_of(np.arange(10), np.full(10, 10), 3).tolist() == [1, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert interval_of(np.arange(4), np.full(4, 4), 1).tolist() == [1] * 4


def test_log_histories_are_the_owners_previous_items():
    owner, item = np.array([0, 0, 0, 1, 1]), np.array([5, 6, 7, 8, 9])
    h = log_histories(owner, item, 2, np.arange(5))
    assert h.tolist() == [[-1, -1], [5, -1], [5, 6], [-1, -1], [8, -1]]


def test_cloud_rows_of_a_round_are_the_devices_rows_of_that_round(tiny_view):
    view = tiny_view
    logs = view.cloud().logs
    for rnd in (1, 2):
        cloud = cloud_rows(logs, view.n_items, rnd, 2, 10, 1, 0, 0)
        dev = CTRRows.concat([device_rows(view.device(d), rnd, 2, view.n_items, 1, 0, 0)
                              for d in range(view.n_devices)])
        pos_c, pos_d = cloud.label == 1, dev.label == 1
        assert pos_c.sum() == pos_d.sum() > 0
        np.testing.assert_array_equal(cloud.owner[pos_c], dev.owner[pos_d])
        np.testing.assert_array_equal(cloud.item[pos_c], dev.item[pos_d])
        np.testing.assert_array_equal(cloud.history[pos_c], dev.history[pos_d])
        assert (dev.label == 0).sum() == pos_d.sum()                       # one negative each
    pre = cloud_rows(logs, view.n_items, 0, 2, 10, 1, 0, 0)
    every = cloud_rows(logs, view.n_items, -1, 2, 10, 1, 0, 0)
    r1, r2 = (cloud_rows(logs, view.n_items, r, 2, 10, 1, 0, 0) for r in (1, 2))
    assert len(every) == len(pre) + len(r1) + len(r2)


def test_activity_groups_are_equal_sized_and_sorted_by_activity():
    from experiments.dccl_plots import activity_groups

    events = np.array([5, 50, 7, 7, 1, 30, 2, 9])
    g = activity_groups(events, 4)
    assert np.bincount(g).tolist() == [2, 2, 2, 2]
    assert g[1] == 0 and g[5] == 0 and g[4] == 3 and g[6] == 3     # most active first
    assert g[7] == 1 and (g[2], g[3]) == (1, 2)                      # ties in device order


def test_activity_codes_bucket_log2_of_the_training_events():
    from fedrec.dccl.data import activity_codes

    assert activity_codes(np.array([0, 1, 3, 4, 255, 256, 10**6]))[:, 0].tolist() == [0, 0, 1, 2, 7, 7, 7]


def test_device_and_cloud_give_a_profileless_user_the_same_activity_code(tiny_view):
    from clients.dccl_device import DCCLDevice
    from fedrec.dccl.data import activity_codes
    from fedrec.views.config import DEVICE

    devs = [tiny_view.device(d) for d in range(tiny_view.n_devices)]
    assert devs[0].profile is None                                 # the synthetic data has none
    cloud = activity_codes(np.bincount(tiny_view.cloud().logs.owner, minlength=len(devs)))
    mine = DCCLDevice.profiles(None, devs)                          # type: ignore[arg-type]
    np.testing.assert_array_equal(mine, cloud)
    assert len(np.unique(cloud)) > 1 and all((d.part <= DEVICE).sum() > 0 for d in devs)


def test_micro_batches_give_the_mini_batch_gradient(monkeypatch):
    """fit_epochs accumulates MICRO_ROWS passes into one Adam step: the same training as one
    pass per mini-batch (f trained, and f frozen with Theta trained)."""
    import fedrec.dccl.train as tr

    torch.set_num_threads(1)
    r = rows(np.random.default_rng(1), 0, 23)
    prof = np.zeros((1, 1), np.int64)

    def train(micro: int, basis: bool) -> tuple[list[float], list[torch.Tensor], list[torch.Tensor]]:
        monkeypatch.setattr(tr, "MICRO_ROWS", micro)
        m = PatchedDIN(n_items=40, categories=np.arange(40) % 3, profile_sizes=(2,), meta_dim=8,
                       hidden=(8, 4, 8), attention_hidden=(8,), seed=0)
        names = m.basis_names() if basis else m.backbone_names()
        start = [p.detach().clone() for p in m.group(names)]

        def meta(p: CTRRows) -> torch.Tensor | None:
            u = m.onehot(torch.from_numpy(prof[p.owner]))
            return m.encoder(torch.full((len(p), 8), 0.5), u) if basis else None

        losses = tr.fit_epochs(m, names, lambda e: r, prof, meta,
                               lambda p: np.linspace(-1, 1, len(p)).astype(np.float32),
                               epochs=2, lr=0.05, batch=10, beta=0.5, seed=3)
        return losses, start, [p.detach().clone() for p in m.group(names)]

    for basis in (False, True):
        loss, start, whole = train(10_000, basis)
        loss3, _, micro = train(3, basis)                     # passes of 3, 3, 3, 1 rows
        assert loss3 == pytest.approx(loss, rel=1e-6)
        for a, b in zip(whole, micro, strict=True):           # Adam amplifies float noise
            torch.testing.assert_close(a, b, rtol=0, atol=2e-5)
        assert max(float((a - s).abs().max()) for a, s in zip(whole, start, strict=True)) > 1e-2
