"""The batched cohort fine-tuning (``personalise_many``, ``C3DRecDevice.run_many``) equals
the per-device loop (``personal_model`` + ``finetune`` + ``personal_state`` +
``device_topk``, ``C3DRecDevice.fit``): personal deltas and user embeddings to 1e-5, losses
to 1e-5, the same top-K lists, uploads, event counts and costs; for devices with sessions
of every length (longer than ``max_len`` too), several sessions, a one-click session, no
training clicks, no held-out clicks, and a stored delta from an earlier round. Neither the
chunking nor the cohort size changes a device's outcome or the round's records."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from experiments.plain_loop import plain_loop
from fedrec.c3drec.agp import level_mask
from fedrec.c3drec.cohort import DeviceInput
from fedrec.c3drec.config import C3DRecConfig
from fedrec.c3drec.personalise import DeviceOutcome, personalise_many
from fedrec.c3drec.pipeline import (
    OUT,
    GlobalModel,
    apply_state,
    device_topk,
    finetune,
    own_items,
    personal_model,
    personal_state,
    served_arrays,
)
from fedrec.c3drec.train import make_model
from fedrec.models.params import get_arrays
from fedrec.protocol import FIT, DeviceTask, device_rng
from tests.c3drec.cases import BASE, build

N_ITEMS, EPOCHS = 40, 3
TOL = 1e-5


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def config(device_items: bool = True) -> C3DRecConfig:
    return C3DRecConfig(embedding_dim=4, hidden_dim=6, max_len=4, topk=5, device_batch=6,
                        device_lr=0.05, lasso=0.01, device_items=device_items)


def global_model(mode: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A pruned (50%) global model as served: arrays and keep-masks (pull: thresholded items)."""
    arrays = get_arrays(make_model(N_ITEMS, 4, 6, seed=0))
    masks = {}
    for name, a in arrays.items():
        if a.ndim == 2:
            masks[name] = level_mask(torch.from_numpy(a), 0.5).numpy()
            arrays[name] = a * masks[name]
    return served_arrays(GlobalModel(arrays, masks, mode, gamma=0.05 if mode != "none" else 0.0))


def devices(mode: str, arrays: dict[str, np.ndarray]) -> list[DeviceInput]:
    rng = np.random.default_rng(11)

    def s(n: int) -> np.ndarray:
        return rng.integers(0, N_ITEMS, n)

    trains = [[], [s(2)], [s(13)], [s(3), s(7), s(1)], [np.array([5, 5, 6, 5, 6, 7])], [s(9)],
              [s(1)]]
    tests = [[s(3)], [s(6)], [s(2), s(9)], [s(5)], [s(4)], [], [s(3)]]
    out = []
    for d, (tr, te) in enumerate(zip(trains, tests, strict=True)):
        cand = rng.choice(N_ITEMS, 8, replace=False) if mode == "pull" else None
        emb = None if cand is None else arrays[OUT][cand].copy()
        out.append(DeviceInput(tr, te, None, np.random.default_rng([3, d]), cand, emb))
    return out


def reference(arrays, masks, c: C3DRecConfig, mode: str, gamma: float,
              d: DeviceInput) -> DeviceOutcome:
    """The per-device loop (clients.c3drec_device.C3DRecDevice.fit's steps)."""
    from fedrec.c3drec.rank_many import DeviceRanking

    model = personal_model(arrays, d.state, c)
    res = finetune(model, d.train, c, mode, gamma, masks, copy.deepcopy(d.rng), EPOCHS)  # d's
    # own rng stays where it is for the batched path
    state = personal_state(model, arrays, c)
    cand = np.zeros(0, np.int64) if d.cand is None else d.cand
    rec = device_topk(model, d.test, c, c.sparse(mode, gamma), cand, d.cand_emb,
                      own_items(d.train, c) if d.cand is not None else None)
    top = None if d.cand is None else rec["topk"]
    return DeviceOutcome(res.loss, res.events, state,
                         DeviceRanking(rec["targets"], rec["user_emb"], top, rec["topk_all"]))


def assert_same(arrays, ref: DeviceOutcome, got: DeviceOutcome) -> None:
    assert got.events == ref.events
    if ref.events:
        assert got.loss == pytest.approx(ref.loss, rel=TOL)
    else:
        assert np.isnan(got.loss) and np.isnan(ref.loss)
    assert got.state.keys() == ref.state.keys()
    a, b = apply_state(arrays, ref.state), apply_state(arrays, got.state)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=TOL, err_msg=name)
    r, g = ref.ranking, got.ranking
    np.testing.assert_array_equal(g.targets, r.targets)
    np.testing.assert_allclose(g.user_emb, r.user_emb, rtol=0, atol=TOL)
    np.testing.assert_array_equal(g.topk_all, r.topk_all)
    assert (g.topk is None) == (r.topk is None)
    if r.topk is not None:
        np.testing.assert_array_equal(g.topk, r.topk)


def inputs_with_state(devs: list[DeviceInput], found: list[DeviceOutcome]) -> list[DeviceInput]:
    return [DeviceInput(d.train, d.test, o.state, np.random.default_rng([4, i]), d.cand,
                        d.cand_emb) for i, (d, o) in enumerate(zip(devs, found, strict=True))]


@pytest.mark.parametrize("device_items", [True, False])
@pytest.mark.parametrize("mode", ["pull", "push", "none"])
def test_batched_equals_the_per_device_loop(mode: str, device_items: bool) -> None:
    arrays, masks = global_model(mode)
    c, gamma = config(device_items), 0.05 if mode != "none" else 0.0
    devs = devices(mode, arrays)
    want = [reference(arrays, masks, c, mode, gamma, d) for d in devs]
    got = personalise_many(arrays, masks, c, mode, gamma, EPOCHS, devs)
    for r, o in zip(want, got, strict=True):
        assert_same(arrays, r, o)
    assert got[0].events == 0 and got[6].events == 0 and got[2].events == EPOCHS * 12
    assert len(got[5].ranking.targets) == 0


def test_a_second_round_continues_from_the_stored_delta() -> None:
    arrays, masks = global_model("pull")
    c = config()
    first = personalise_many(arrays, masks, c, "pull", 0.05, EPOCHS, devices("pull", arrays))
    again = inputs_with_state(devices("pull", arrays), first)
    want = [reference(arrays, masks, c, "pull", 0.05, d) for d in again]
    got = personalise_many(arrays, masks, c, "pull", 0.05, EPOCHS, again)
    for r, o in zip(want, got, strict=True):
        assert_same(arrays, r, o)
    moved = apply_state(arrays, got[2].state)["gru.weight_hh_l0"]
    assert not np.allclose(moved, apply_state(arrays, first[2].state)["gru.weight_hh_l0"])


def test_chunks_do_not_change_a_devices_outcome() -> None:
    arrays, masks = global_model("pull")
    c = config()
    whole = personalise_many(arrays, masks, c, "pull", 0.05, EPOCHS, devices("pull", arrays))
    for chunk in (1, 3):
        part = personalise_many(arrays, masks, c, "pull", 0.05, EPOCHS,
                                devices("pull", arrays), chunk=chunk)
        for a, b in zip(whole, part, strict=True):
            assert_same(arrays, a, b)


# --------------------------------------------------------------------------- device level
def tasks(st, logic) -> list[DeviceTask]:
    ids = list(range(logic.fed.n_devices))
    own = st.fit_own(1, ids)
    return [DeviceTask(d, 1, FIT, st.fit_broadcast(1), own.get(d, {}), None, {},
                       device_rng(0, 1, d, FIT)) for d in ids]


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_run_many_replies_equal_fit_per_device(mode: str, tmp_path) -> None:
    _, st, logic = build(tmp_path, strategy=f"c3drec-{mode}")
    loop = [logic.fit(t) for t in tasks(st, logic)]
    many = logic.run_many(tasks(st, logic))
    assert any(r.num_examples == 0 for r in loop) and any(r.num_examples > 0 for r in loop)
    arrays = logic.global_model(st.fit_broadcast(1))[0]
    for a, b in zip(loop, many, strict=True):
        assert (b.device_id, b.num_examples, b.flops, b.peak_mem_bytes) == \
            (a.device_id, a.num_examples, a.flops, a.peak_mem_bytes)
        assert b.metrics.keys() == a.metrics.keys()
        assert b.metrics.get("loss", 0.0) == pytest.approx(a.metrics.get("loss", 0.0), rel=TOL)
        assert b.state is not None and a.state is not None and b.state.keys() == a.state.keys()
        pa, pb = apply_state(arrays, a.state), apply_state(arrays, b.state)
        for name in pa:
            np.testing.assert_allclose(pb[name], pa[name], rtol=0, atol=TOL)
        for k in ("topk", "topk_all"):
            if k in a.state:
                np.testing.assert_array_equal(b.state[k], a.state[k])
        assert b.upload.keys() == a.upload.keys()
        for k in a.upload:
            np.testing.assert_allclose(b.upload[k], a.upload[k], rtol=0, atol=TOL)


def test_cohort_size_does_not_change_the_round_records(tmp_path) -> None:
    def records(per_client: int) -> list[dict]:
        ov = {**BASE, "strategy": "c3drec-pull", "num-rounds": 1, "devices-per-client":
              per_client, "output-dir": str(tmp_path), "run-name": f"c{per_client}"}
        return plain_loop(ov, str(tmp_path / f"c{per_client}"), verbose=False)

    small, large = records(3), records(32)
    timed = {"fit_s", "fit_wall_s", "elapsed_s", "eta_s", "round_s", "round_wall_s"}
    keys = sorted(set(large[0]) - timed - {"train_loss"})
    assert {"test_recall@20", "test_all_mrr@20", "bytes_down", "energy_j"} <= set(keys)
    for k in keys:
        assert small[0][k] == large[0][k], k
    assert small[0]["train_loss"] == pytest.approx(large[0]["train_loss"], rel=TOL)
