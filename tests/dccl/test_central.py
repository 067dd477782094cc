"""Central baselines on a tiny planted-group sample view: shapes, data, learning, seeds, summary."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from fedrec.data.schema import Dataset, make_interactions
from fedrec.dccl import central
from fedrec.dccl.central import (
    CentralSpec,
    click_negatives,
    epoch_negatives,
    gather_training,
    held_out,
    positions_loss,
    ranks_summary,
    train_central,
    train_positions_epoch,
    training_windows,
)
from fedrec.errors import ConfigError
from fedrec.models.base import PAD, Batch
from fedrec.models.common import bce_loss
from fedrec.models.sasrec import SASRec
from fedrec.views import (
    DEVICE,
    SampleView,
    SampleViewConfig,
    Windows,
    build_sample_view,
    resample_negatives,
)

GROUPS, GROUP_ITEMS, USERS, EVENTS, N_EVAL = 4, 15, 48, 10, 30


def groups_dataset() -> Dataset:
    """User u clicks EVENTS distinct items of group u % GROUPS (items g*15 .. g*15+14), in a
    seeded random order: the group is the whole signal, for user ids and histories alike."""
    rng = np.random.default_rng(0)
    user, item, ts = [], [], []
    for u in range(USERS):
        picks = rng.permutation(GROUP_ITEMS)[:EVENTS] + (u % GROUPS) * GROUP_ITEMS
        user += [u] * EVENTS
        item += picks.tolist()
        ts += list(range(EVENTS))
    return Dataset("groups", make_interactions(np.array(user), np.array(item), np.array(ts)),
                   has_time=True)


@functools.cache
def groups_view(eval_protocol: str = "sampled") -> SampleView:
    cfg = SampleViewConfig(history_len=4, negatives=2, eval_negatives=N_EVAL,
                           eval_protocol=eval_protocol)
    return build_sample_view(groups_dataset(), cfg)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models train fastest single-threaded (on 2 busy cores, 2 threads run 50x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SPECS = {
    "mf": CentralSpec("mf", dim=8, epochs=15, batch_size=64, lr=0.02),
    "neumf": CentralSpec("neumf", dim=8, epochs=15, batch_size=64, lr=0.01),
    "sasrec": CentralSpec("sasrec", dim=8, epochs=15, batch_size=64, lr=0.01, blocks=1,
                          dropout=0.1, sequences=16),  # 96 windows: 6 steps per epoch
    "sasrec-rows": CentralSpec("sasrec", dim=8, epochs=15, batch_size=64, lr=0.01, blocks=1,
                               dropout=0.1, sasrec_objective="rows"),
}


@functools.cache
def trained(model: str) -> tuple:
    lines: list[str] = []
    return train_central(groups_view(), SPECS[model], lines.append), tuple(lines)


def test_training_events_are_the_pre_and_device_clicks_with_the_views_negatives() -> None:
    view = groups_view()
    ev = gather_training(view)
    expect = [(d, int(i)) for d in range(USERS) for i, p in
              zip(view.device(d).items, view.device(d).part, strict=True) if p <= DEVICE]
    assert list(zip(ev.device.tolist(), ev.item.tolist(), strict=True)) == expect
    assert len(ev.item) == USERS * (EVENTS - 2) and ev.negatives.shape == (len(ev.item), 2)
    first = view.device(0)
    assert ev.history[0].tolist() == first.samples.history[0].tolist() == [-1] * 4
    assert ev.history[2].tolist() == first.items[:2].tolist() + [-1, -1]
    for d in (0, 5):  # negatives: never touched by the device, resampled per epoch
        rows = ev.device == d
        assert not np.isin(ev.negatives[rows], view.device(d).items).any()
    again = epoch_negatives(view, ev, 0)
    fresh = epoch_negatives(view, ev, 1)
    assert again is ev.negatives and fresh.shape == ev.negatives.shape
    assert not np.array_equal(fresh, ev.negatives)
    dev = view.device(3)
    mine = resample_negatives(dev, view.n_items, 2, 0, 1)[dev.part <= DEVICE]
    assert fresh[ev.device == 3].tolist() == mine.tolist()


def test_held_out_rows_and_exclusions() -> None:
    view = groups_view()
    test = held_out(gather_training(view).devs, "test", view.n_items)
    assert test.device.tolist() == list(range(USERS))
    dev = view.device(7)
    assert test.target[7] == dev.items[-1] and test.candidates is not None
    assert test.candidates[7].tolist() == dev.test.candidates[0].tolist()
    excluded = set(test.exclude[7].indices.tolist())
    assert excluded == set(dev.items[:-2].tolist())  # pre/device items, not valid or test


@pytest.mark.parametrize("model", list(SPECS))
def test_ranks_have_the_right_shapes_and_ranges(model: str) -> None:
    res, lines = trained(model)
    assert res.device_ids.tolist() == list(range(USERS))
    for r, top in ((res.sampled_ranks, N_EVAL), (res.valid_sampled_ranks, N_EVAL),
                   (res.full_ranks, groups_view().n_items - 1)):
        assert r.shape == (USERS,) and r.dtype == np.int64
        assert r.min() >= 0 and r.max() <= top
    assert len(res.epochs_loss) == 15 and len(lines) == 15
    assert lines[0].startswith(SPECS[model].model)
    assert res.n_params > 0 and res.train_s > 0


@pytest.mark.parametrize("model", list(SPECS))
def test_each_model_learns_the_groups(model: str) -> None:
    res, _ = trained(model)
    random_hr = 10 / (1 + N_EVAL)  # 0.32
    assert res.epochs_loss[-1] < 0.8 * res.epochs_loss[0]
    assert ranks_summary(res.sampled_ranks)["HR@10"] > random_hr + 0.3
    # the full ranking sees 60 - 8 items; the group's 7 others should lead it
    assert ranks_summary(res.full_ranks)["HR@10"] > 10 / 52 + 0.3


def test_training_windows_by_hand() -> None:
    # device 0: 1 event (no target), device 1: 6 events, device 2: 3 events; max_len 2
    w = training_windows(np.array([0, 1, 1, 1, 1, 1, 1, 2, 2, 2]), 2)
    assert w.tolist() == [[1, -1], [2, 3], [4, 5], [7, 8]]  # targets: rows + 1, end-aligned
    assert training_windows(np.array([0, 0, 0]), 5).tolist() == [[0, 1, -1, -1, -1]]
    assert training_windows(np.array([], np.int64), 3).shape == (0, 3)
    with pytest.raises(ConfigError, match="grouped by device"):
        training_windows(np.array([1, 0]), 2)


def test_windows_target_every_training_click_but_the_first_once_and_never_held_out() -> None:
    view = groups_view()
    ev = gather_training(view)
    w = training_windows(ev.device, view.cfg.history_len)
    real = w >= 0
    inputs, targets = w[real], w[real] + 1
    assert (ev.device[inputs] == ev.device[targets]).all()  # a window stays in its device
    starts = np.r_[0, np.flatnonzero(np.diff(ev.device)) + 1]  # each device's first click
    assert sorted(targets.tolist()) == sorted(set(range(len(ev.item))) - set(starts.tolist()))
    assert (real.sum(1) >= 1).all() and real[:, :1].all()  # end padding only
    for d in range(USERS):  # distinct items per user: items identify the events
        dev = view.device(d)
        mine = ev.item[targets[ev.device[targets] == d]]
        assert sorted(mine.tolist()) == sorted(dev.items[dev.part <= DEVICE][1:].tolist())
        assert not np.isin(mine, dev.items[dev.part > DEVICE]).any()  # valid/test never


def test_click_negatives_avoid_touched_items_and_are_resampled() -> None:
    view = groups_view()  # negatives = 2
    ev = gather_training(view)
    first, again, fresh = (click_negatives(view, ev, e) for e in (0, 0, 1))
    assert first.tolist() == ev.negatives[:, 0].tolist() == again.tolist()
    assert fresh.shape == first.shape and not np.array_equal(fresh, first)
    for d in range(USERS):
        dev = view.device(d)
        assert not np.isin(fresh[ev.device == d], dev.items).any()  # valid/test items too
        assert not np.isin(first[ev.device == d], dev.items).any()
    dev = view.device(3)
    mine = resample_negatives(dev, view.n_items, 1, 0, 1)[dev.part <= DEVICE, 0]
    assert fresh[ev.device == 3].tolist() == mine.tolist()
    one = build_sample_view(groups_dataset(), SampleViewConfig(history_len=4, negatives=1,
                                                               eval_negatives=N_EVAL))
    ev1 = gather_training(one)
    assert click_negatives(one, ev1, 2).tolist() == epoch_negatives(one, ev1, 2)[:, 0].tolist()


# a tiny hand-made batch: end-padded inputs, the next clicks and one negative per slot
INPUTS = torch.tensor([[3, 1, 4, PAD], [2, 5, PAD, PAD], [5, 9, 2, 6], [7, PAD, PAD, PAD]])
POSITIVES = torch.tensor([[1, 4, 8, PAD], [5, 0, PAD, PAD], [9, 2, 6, 3], [1, PAD, PAD, PAD]])
NEGATIVES = torch.tensor([[6, 0, 2, PAD], [7, 7, PAD, PAD], [0, 1, 4, 8], [9, PAD, PAD, PAD]])


def _sasrec(no_positions: bool) -> SASRec:
    m = SASRec(n_items=10, dim=8, max_len=4, blocks=2, heads=2, seed=0).eval()
    if no_positions:  # then a slot's state is the state of its prefix (causal attention)
        with torch.no_grad():
            m.pos_emb.weight.zero_()
    return m


def _rows_bce(m: SASRec) -> list[list[float]]:
    """The rows objective, slot by slot: BCE of [positive, negative] after each prefix."""
    out = []
    for b in range(len(INPUTS)):
        row = []
        for j in range(int((INPUTS[b] != PAD).sum())):
            batch = Batch(history=INPUTS[b : b + 1, : j + 1])
            cand = torch.stack([POSITIVES[b, j], NEGATIVES[b, j]]).view(1, 2)
            row.append(bce_loss(m.score(batch, cand), torch.tensor([[1.0, 0.0]])).item())
        out.append(row)
    return out


def test_positions_loss_is_the_mean_of_the_rows_bce_slot_by_slot() -> None:
    m = _sasrec(no_positions=True)
    with torch.no_grad():
        loss, n = positions_loss(m, INPUTS, POSITIVES, NEGATIVES)
        rows = _rows_bce(m)
    assert n == 10 == sum(len(r) for r in rows)
    assert loss.item() == pytest.approx(float(np.mean([x for r in rows for x in r])), abs=1e-6)
    with torch.no_grad():  # the paper's form: -log s(pos) - log(1 - s(neg)), halved
        logits = m.sequence_logits(INPUTS, torch.stack([POSITIVES, NEGATIVES], -1))
        real = INPUTS != PAD
        paper = -torch.log(torch.sigmoid(logits[..., 0])) - torch.log(1 - torch.sigmoid(
            logits[..., 1]))
    assert 2 * loss.item() == pytest.approx(paper[real].mean().item(), abs=1e-5)


def test_with_positions_only_each_rows_last_slot_is_the_rows_objective() -> None:
    m = _sasrec(no_positions=False)  # the paper's positions: count back from the window's end
    with torch.no_grad():
        logits = m.sequence_logits(INPUTS, torch.stack([POSITIVES, NEGATIVES], -1))
        rows = _rows_bce(m)
    labels = torch.tensor([1.0, 0.0])
    for b, row in enumerate(rows):
        per = [bce_loss(logits[b, j], labels).item() for j in range(len(row))]
        assert per[-1] == pytest.approx(row[-1], abs=1e-6)
        if len(row) > 1:  # earlier slots saw their last item at position n - 1 - j, not 0
            assert per[0] != pytest.approx(row[0], abs=1e-4)


def test_padding_slots_contribute_nothing() -> None:
    m = _sasrec(no_positions=False)
    base, n = positions_loss(m, INPUTS, POSITIVES, NEGATIVES)
    junk = INPUTS == PAD
    pos, neg = POSITIVES.masked_fill(junk, 3), NEGATIVES.masked_fill(junk, 8)  # any values
    wide = torch.cat([INPUTS, torch.full((4, 3), PAD)], 1)
    pad3 = torch.full((4, 3), 5)
    extra = torch.cat([INPUTS, torch.full((1, 4), PAD)])  # an empty window adds nothing
    for args in ((INPUTS, pos, neg), (wide, torch.cat([POSITIVES, pad3], 1),
                                      torch.cat([NEGATIVES, pad3], 1)),
                 (extra, torch.cat([POSITIVES, POSITIVES[:1]]),
                  torch.cat([NEGATIVES, NEGATIVES[:1]]))):
        other, k = positions_loss(m, *args)
        assert k == n and other.item() == pytest.approx(base.item(), abs=1e-6)
    m.zero_grad()
    positions_loss(m, INPUTS, pos, neg)[0].backward()
    assert m.item_emb.weight.grad is not None
    touched = set(INPUTS[~junk].tolist()) | set(POSITIVES[~junk].tolist()) | set(
        NEGATIVES[~junk].tolist())
    for i in set(range(10)) - touched:  # no gradient reaches an item seen only at PAD slots
        assert torch.all(m.item_emb.weight.grad[i] == 0)


def test_a_positions_epoch_feeds_every_window_once_with_its_targets_and_negatives(
        monkeypatch: pytest.MonkeyPatch) -> None:
    view = groups_view()
    ev = gather_training(view)
    windows = training_windows(ev.device, view.cfg.history_len)
    neg = click_negatives(view, ev, 1)
    seen: list[tuple] = []

    def record(model: SASRec, inputs: torch.Tensor, pos: torch.Tensor,
               negs: torch.Tensor) -> tuple[torch.Tensor, int]:
        pad = (0, windows.shape[1] - inputs.shape[1])
        inputs, pos, negs = (torch.nn.functional.pad(t, pad, value=PAD) for t in
                             (inputs, pos, negs))
        real = inputs != PAD
        for r in range(len(inputs)):
            seen.append(tuple(torch.where(real[r], t[r], PAD).tolist() for t in
                              (inputs, pos, negs)))
        return positions_loss(model, inputs, pos, negs)

    monkeypatch.setattr(central, "positions_loss", record)
    spec = CentralSpec("sasrec", dim=4, blocks=1, sequences=7)
    m = SASRec(n_items=view.n_items, dim=4, max_len=4, blocks=1, seed=0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    item = torch.from_numpy(ev.item)
    train_positions_epoch(m, opt, item, torch.from_numpy(windows), neg, spec, 1)
    expect = []
    for w in windows:
        real = w >= 0
        expect.append(tuple(np.where(real, a, PAD).tolist() for a in
                            (ev.item[np.maximum(w, 0)], ev.item[np.where(real, w + 1, 0)],
                             neg[np.where(real, w + 1, 0)])))
    assert sorted(seen) == sorted(expect)


@pytest.mark.parametrize("model", ["mf", "sasrec"])
def test_same_seed_same_ranks(model: str) -> None:
    spec = CentralSpec(model, dim=4, epochs=2, batch_size=32, lr=0.01, dropout=0.3)
    a, b = train_central(groups_view(), spec), train_central(groups_view(), spec)
    assert a.epochs_loss == b.epochs_loss
    assert np.array_equal(a.sampled_ranks, b.sampled_ranks)
    assert np.array_equal(a.full_ranks, b.full_ranks)
    c = train_central(groups_view(), CentralSpec(model, dim=4, epochs=2, batch_size=32,
                                                 lr=0.01, dropout=0.3, seed=1))
    assert c.epochs_loss != a.epochs_loss


def test_full_protocol_has_no_sampled_ranks() -> None:
    res = train_central(groups_view("full"), CentralSpec("mf", dim=4, epochs=1))
    assert res.sampled_ranks.shape == (0,) and res.valid_sampled_ranks.shape == (0,)
    assert res.full_ranks.shape == (USERS,)


def test_no_valid_split_gives_empty_valid_ranks() -> None:
    cfg = SampleViewConfig(history_len=4, negatives=1, eval_negatives=N_EVAL,
                           windows=Windows(test_last=1, valid_last=0))
    res = train_central(build_sample_view(groups_dataset(), cfg), CentralSpec("mf", epochs=1))
    assert res.valid_sampled_ranks.shape == (0,) and res.sampled_ranks.shape == (USERS,)


def test_ranks_summary_by_hand() -> None:
    s = ranks_summary(np.array([0, 4, 12]))
    assert s["HR@1"] == pytest.approx(1 / 3)
    assert s["HR@5"] == s["HR@10"] == pytest.approx(2 / 3)
    assert s["NDCG@5"] == pytest.approx((1 + 1 / math.log2(6)) / 3)
    assert s["NDCG@1"] == pytest.approx(1 / 3)
    assert s["MRR@10"] == pytest.approx((1 + 1 / 5) / 3)
    assert s["MRR"] == pytest.approx((1 + 1 / 5 + 1 / 13) / 3)
    assert math.isnan(ranks_summary(np.array([], np.int64))["HR@10"])


def test_bad_specs() -> None:
    with pytest.raises(ConfigError, match="central model 'svd'"):
        CentralSpec("svd")
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        CentralSpec("mf", epochs=0)
    with pytest.raises(ConfigError, match="sasrec_objective 'all'"):
        CentralSpec("sasrec", sasrec_objective="all")
    with pytest.raises(ConfigError, match="sequences must be >= 1"):
        CentralSpec("sasrec", sequences=0)
    view = build_sample_view(groups_dataset(), SampleViewConfig(negatives=0, eval_negatives=N_EVAL))
    with pytest.raises(ConfigError, match="view-negatives >= 1"):
        train_central(view, CentralSpec("mf"))
