"""C3DRec device logic on a tiny dataset without Flower: one device's fit and evaluation,
pull == push when nothing is sparsified, the personal state stays small."""

from __future__ import annotations

import numpy as np
import pytest

from clients.c3drec_device import TOPK, TOPK_ALL
from fedrec.c3drec.pipeline import OUT, apply_state, cloud_topk, read_model
from fedrec.c3drec.sparsify import decode_tensors, raw_nbytes
from fedrec.c3drec.train import next_click_events, rank_metrics_topk
from fedrec.protocol import EVALUATE, FIT, DeviceTask, device_rng
from tests.c3drec.cases import build


def task(st, d: int, kind: str, state=None, own=None) -> DeviceTask:
    bcast = st.fit_broadcast(1) if kind == FIT else st.eval_broadcast(1)
    if own is None:
        own = (st.fit_own(1, [d]) if kind == FIT else st.eval_own(1, [d])).get(d, {})
    return DeviceTask(d, 1, kind, bcast, own, state, {}, device_rng(0, 1, d, kind))


def first_with_test(logic) -> int:
    return next(d for d in range(logic.fed.n_devices)
                if logic.fed.test.of(d) and logic.fed.device_train.of(d))


@pytest.fixture(scope="module")
def pull(tmp_path_factory):
    return build(tmp_path_factory.mktemp("pull"), strategy="c3drec-pull")


def test_pull_fit_uploads_nothing_and_keeps_a_small_personal_state(pull) -> None:
    _, st, logic = pull
    d = first_with_test(logic)
    r = logic.fit(task(st, d, FIT))
    assert r.upload == {} and r.status == "ok" and r.num_examples > 0 and r.flops > 0
    arrays, masks = read_model(st.global_arrays)
    personal = apply_state(arrays, r.state)
    own = np.unique(np.concatenate(logic.fed.device(d).train))
    others = np.setdiff1d(np.arange(logic.fed.n_items), own)
    np.testing.assert_array_equal(personal[OUT][others], arrays[OUT][others])  # the cloud's
    assert not np.array_equal(personal[OUT][own], arrays[OUT][own])  # its own items: personal
    assert not np.array_equal(personal["gru.weight_hh_l0"], arrays["gru.weight_hh_l0"])
    for n, m in masks.items():
        assert (personal[n][~m] == 0).all()                             # pruned stay pruned
    model_bytes = sum(a.nbytes for a in arrays.values())
    assert raw_nbytes({k: v for k, v in r.state.items() if k.startswith("d.")}) < model_bytes / 4
    n_events = len(next_click_events(logic.fed.device(d).test, 1)[1])
    assert r.state[TOPK].shape == r.state[TOPK_ALL].shape == (n_events, logic.c3.topk)
    cand = set(st.cands[d].tolist())
    assert set(r.state[TOPK][r.state[TOPK] >= 0].tolist()) <= cand


def test_pull_evaluation_scores_the_stored_lists(pull) -> None:
    _, st, logic = pull
    d = first_with_test(logic)
    state = logic.fit(task(st, d, FIT)).state
    m = logic.evaluate(task(st, d, EVALUATE, state)).metrics
    _, targets = next_click_events(logic.fed.device(d).test, 1)
    expected = rank_metrics_topk(state[TOPK].astype(np.int64), targets, 20)
    assert m["test_recall@20"] == pytest.approx(expected["hit"].mean())
    assert m["test_mrr@20"] == pytest.approx(expected["rr"].mean())
    group = "new" if logic.fed.is_new[d] else "old"
    assert m[f"test_{group}_recall@20"] == m["test_recall@20"]
    assert m["test_events"] == len(targets) and "test_all_recall@20" in m
    assert logic.evaluate(task(st, d, EVALUATE, None)).metrics == {}   # never trained


def test_second_round_continues_from_the_stored_delta(pull) -> None:
    _, st, logic = pull
    d = first_with_test(logic)
    first = logic.fit(task(st, d, FIT))
    again = logic.fit(task(st, d, FIT, first.state))
    arrays, _ = read_model(st.global_arrays)
    a, b = apply_state(arrays, first.state), apply_state(arrays, again.state)
    assert not np.array_equal(a["gru.weight_ih_l0"], b["gru.weight_ih_l0"])


def test_pull_and_push_rank_the_same_without_sparsity(tmp_path) -> None:
    plain = {"c3drec_emb_sparsity": 0.0, "c3drec_gamma": 0.0, "c3drec_lasso": 0.0,
             "c3drec_device_items": False}   # personal item rows never reach a push cloud
    _, spull, lpull = build(tmp_path / "a", strategy="c3drec-pull", **plain)
    _, spush, lpush = build(tmp_path / "b", strategy="c3drec-push", **plain)
    np.testing.assert_array_equal(spull.gm.arrays[OUT], spush.gm.arrays[OUT])
    checked = 0
    for d in range(lpull.fed.n_devices):
        rp, rs = lpull.fit(task(spull, d, FIT)), lpush.fit(task(spush, d, FIT))
        if not rs.upload:
            assert not lpull.fed.test.of(d)
            continue
        u = decode_tensors(rs.upload)[0]["uemb"]
        np.testing.assert_array_equal(cloud_topk(u, spush.gm, spush.cands[d], 20), rp.state[TOPK])
        checked += 1
    assert checked >= 5


def test_push_device_without_held_out_clicks_uploads_nothing(tmp_path) -> None:
    _, st, logic = build(tmp_path, strategy="c3drec-push")
    quiet = [d for d in range(logic.fed.n_devices) if not logic.fed.test.of(d)]
    assert quiet, "the tiny set should have a device without test clicks"
    r = logic.fit(task(st, quiet[0], FIT))
    assert r.upload == {} and logic.evaluate(task(st, quiet[0], EVALUATE, r.state)).metrics == {}
