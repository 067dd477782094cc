"""MC-SF's events and models: windows, upload points, GRU, warm starts, stacked fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrec.mcsf.central import f2s_start, s2f_start
from fedrec.mcsf.data import held_out_events, memory_points, training_events, windows
from fedrec.mcsf.model import (
    Shape,
    fast_logits,
    gru_run,
    init_fast,
    init_slow,
    negative_memory,
    slow_logits,
)
from fedrec.mcsf.train import fit_stacked, pad_devices
from fedrec.views.config import DEVICE, PRE, TEST

SHAPE = Shape(n_items=30, dim=4, attention=(6,), hidden=(8, 4), f2s=False, s2f=False)


@pytest.fixture(scope="module")
def view():
    from experiments.setup import effective_config, resolve
    from tests.mcsf.cases import TINY

    cfg, cls = resolve(effective_config({}, TINY))
    return cls.prepare_data(cfg), cfg.protocol


def test_windows_are_right_aligned_and_pad_left():
    got = windows(np.arange(1, 7), np.array([0, 2, 6]), 3)
    assert got.tolist() == [[-1, -1, -1], [-1, 1, 2], [4, 5, 6]]


def test_events_read_only_the_past_and_the_cloud_only_the_slow_phase(view):
    fed, o = view
    dev = fed.device(3)
    s_f, s_t = int((dev.part < DEVICE).sum()), int((dev.part < TEST).sum())
    assert s_t - s_f == 5 and len(dev.items) - s_t == 5
    mem = memory_points(dev, o.upload_every, o.fast_len)
    assert mem.point[-1] == s_t and np.all(np.diff(mem.point) == o.upload_every)
    expo = dev.samples.item[dev.samples.kind == 2].reshape(len(dev.items), -1)
    for p, w in zip(mem.point, mem.window, strict=True):     # exposures of events before p
        assert w.tolist() == windows(expo[:p].ravel(), np.array([p * expo.shape[1]]),
                                     o.fast_len)[0].tolist()
    kw = {"slow_len": o.slow_len, "fast_len": o.fast_len, "every": o.upload_every}
    fast = training_events(dev, DEVICE, exposure_negatives=1, **kw)
    test = held_out_events(dev, **kw)
    pre_tail = dev.items[:s_f][-o.slow_len:].tolist()
    for ev in (fast, test):                  # the cloud's sequence stops at the slow phase
        assert all(row[row >= 0].tolist() == pre_tail for row in ev.slow)
        assert np.all(mem.point[ev.mem] <= ev.event)          # the latest upload at or before
        assert all(c[-1] == dev.items[t - 1] for c, t in zip(ev.clicks, ev.event, strict=True))
    assert test.mem.tolist() == [len(mem.point) - 1] * 5      # the upload at the test start
    slow = training_events(dev, PRE, exposure_negatives=1, **kw)
    assert slow.cand.shape[1] == 1 + o.negatives + 1 and np.all(slow.label[:, 0] == 1)
    assert np.all(slow.cand[:, -1] == expo[slow.event, 0])    # the first exposure is a negative


def test_gru_equals_torch_and_ignores_left_padding():
    p = init_fast(SHAPE, 0)
    gru = torch.nn.GRU(4, 4, batch_first=True)
    with torch.no_grad():
        gru.weight_ih_l0.copy_(p["gp.w_ih"].T)
        gru.weight_hh_l0.copy_(p["gp.w_hh"].T)
        gru.bias_ih_l0.copy_(p["gp.b_ih"])
        gru.bias_hh_l0.copy_(p["gp.b_hh"])
    x = torch.randn(2, 3, 4)
    ref = gru(x)[1][0]
    padded = torch.cat([torch.zeros(2, 2, 4), x], 1)
    mask = torch.tensor([[0, 0, 1, 1, 1]] * 2, dtype=torch.float32)
    got = gru_run(p, "gp", padded, mask, torch.zeros(2, 1, 4)).squeeze(1)
    assert torch.allclose(got, ref, atol=1e-6)


def batch(n=5, c=3):
    g = torch.Generator().manual_seed(1)
    ids = lambda *s: torch.randint(-1, 30, s, generator=g)
    return {"slow": ids(n, 8), "clicks": ids(n, 4), "expo": ids(n, 4),
            "cand": torch.randint(0, 30, (n, c), generator=g), "mem": torch.randn(n, 4, generator=g),
            "rc": torch.randn(n, c, 4, generator=g), "re": torch.randn(n, c, 4, generator=g)}


def test_the_warm_starts_begin_where_the_independent_models_are():
    x = batch()
    din = init_slow(SHAPE, 0)
    f2s = Shape(**{**vars(SHAPE), "f2s": True})
    fast = init_fast(SHAPE, 0)
    assert torch.allclose(slow_logits(f2s_start(din, fast, f2s, 0), f2s, x),
                          slow_logits(din, SHAPE, x), atol=1e-6)
    s2f = Shape(**{**vars(SHAPE), "s2f": True})
    table = din["emb"]
    assert torch.allclose(fast_logits(s2f_start(fast, s2f, 0), s2f, x, table),
                          fast_logits(fast, SHAPE, x, table), atol=1e-6)
    mem = negative_memory(fast, x["expo"], table)             # from h = 0, GRU_n
    assert mem.shape == (5, 4)


def test_a_stacked_cohort_fit_equals_each_device_alone():
    s2f = Shape(**{**vars(SHAPE), "s2f": True})
    start = s2f_start(init_fast(SHAPE, 0), s2f, 0)
    table = init_slow(SHAPE, 0)["emb"]
    devices = []
    for n in (5, 2, 7):
        x = batch(n)
        label = torch.zeros(n, 3)
        label[:, 0] = 1
        devices.append({k: x[k] for k in ("clicks", "expo", "cand", "rc", "re")} | {"label": label})
    rngs = lambda: [np.random.default_rng(i) for i in range(3)]
    from fedrec.coda.train import schedule
    steps = schedule([5, 2, 7], 2, rngs(), 2)
    stacked = {k: v.expand(3, *v.shape).clone() for k, v in start.items()}
    together = fit_stacked(stacked, s2f, pad_devices(devices), steps, table, 0.01, 1e-4)
    for i, n in enumerate((5, 2, 7)):
        alone_steps = schedule([n], 2, [rngs()[i]], 2)
        one = {k: v.unsqueeze(0).clone() for k, v in start.items()}
        alone = fit_stacked(one, s2f, pad_devices([devices[i]]), alone_steps, table, 0.01, 1e-4)
        for k in start:
            assert torch.allclose(together[k][i], alone[k][0], atol=1e-6), k
        assert not torch.equal(alone["mlp0.w"][0], start["mlp0.w"])    # it did train
