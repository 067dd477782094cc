"""C3DRec privacy on the ACTUAL messages of one round, every phase (carried by the round driver
through a DeviceHost): clicks at or after T_device never leave a device.

* Everything the cloud sends (model download, candidate sets) is the same when every
  device's clicks after T_device are replaced (items permuted among those rows): the cloud
  never saw them.
* Pull devices upload nothing. Push devices upload only their sparsified user embeddings,
  ``[held-out clicks, hidden]`` float32 with every kept entry above gamma (the protocol's
  declared leak: they change with the private clicks, nothing else does).
* Reports: the simulator's telemetry fields (status, error, example count, costs) and the
  declared metrics (fit: loss; evaluation: test_* scores) are the same for every protocol
  and are measurement, not protocol payload.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.c3drec.sparsify import decode_tensors
from fedrec.c3drec.train import next_click_events
from tests.c3drec.cases import build, dataset, one_round, scopes, shuffle_clicks

T_DEVICE, T_TEST = 1512057600, 1512230400
REPORT_KEYS = {"status", "error", "n", "metrics", "costs"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    base = dataset()
    private = shuffle_clicks(shuffle_clicks(base, T_DEVICE, T_TEST, 1), T_TEST, 2**62, 2)
    out = {}
    for mode in ("pull", "push"):
        for name, data in (("orig", base), ("private-changed", private)):
            cfg, st, logic = build(tmp_path_factory.mktemp(mode), data, strategy=f"c3drec-{mode}")
            out[mode, name] = (st, logic, one_round(cfg, st, logic))
    return out


def same_message(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    """Same arrays and same header, except the run's own id."""
    (meta_a, sc_a), (meta_b, sc_b) = scopes(a), scopes(b)
    meta_a.pop("run"), meta_b.pop("run")
    same = lambda x, y: x.dtype == y.dtype and np.array_equal(x, y)
    return meta_a == meta_b and sc_a.keys() == sc_b.keys() and all(
        sc_a[o].keys() == sc_b[o].keys() and all(same(sc_a[o][k], sc_b[o][k]) for k in sc_a[o])
        for o in sc_a)


def test_the_shuffle_changes_private_clicks_only(runs) -> None:
    (_, a, _), (_, b, _) = runs["push", "orig"], runs["push", "private-changed"]
    def train(logic, d: int) -> list[list[int]]:
        return [s.tolist() for s in logic.fed.device(d).train]

    changed = [d for d in range(a.fed.n_devices) if train(a, d) != train(b, d)]
    assert len(changed) >= a.fed.n_devices // 2
    assert a.fed.cloud_pre.items.tolist() == b.fed.cloud_pre.items.tolist()


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_everything_the_cloud_sends_ignores_post_t_device_clicks(runs, mode: str) -> None:
    (_, _, a), (_, _, b) = runs[mode, "orig"], runs[mode, "private-changed"]
    assert set(a["fit_ins"]) == set(b["fit_ins"])
    for cid in a["fit_ins"]:
        assert same_message(a["fit_ins"][cid], b["fit_ins"][cid])        # model + candidates


def test_pull_devices_upload_nothing(runs) -> None:
    _, logic, r = runs["pull", "orig"]
    seen = 0
    for nd in r["fit_res"].values():
        meta, sc = scopes(nd)
        assert len(nd) == 1 and sc == {}                                  # the header only
        for rep in meta["devices"].values():
            assert set(rep) == REPORT_KEYS and set(rep["metrics"]) <= {"loss"}
            seen += 1
    assert seen == logic.fed.n_devices


def test_push_devices_upload_only_sparsified_user_embeddings(runs) -> None:
    st, logic, r = runs["push", "orig"]
    _, _, r2 = runs["push", "private-changed"]
    H, gamma, uploads, differ = logic.c3.hidden_dim, st.gm.gamma, 0, 0
    assert gamma > 0
    for cid, nd in r["fit_res"].items():
        _, sc = scopes(nd)
        _, sc2 = scopes(r2["fit_res"][cid])
        for dev, up in sc.items():
            assert all(k.startswith("uemb~") for k in up)                 # nothing else
            u = decode_tensors(up)[0]["uemb"]
            n_events = len(next_click_events(logic.fed.device(int(dev)).test, 1)[1])
            assert u.dtype == np.float32 and u.shape == (n_events, H)
            assert (np.abs(u[u != 0]) > gamma).all() and (u == 0).mean() > 0.5
            for key, a in up.items():                                     # no item ids anywhere
                field = key.split("~")[2]
                allowed = {"val": a.dtype.kind == "f", "shape": a.tolist() == list(u.shape),
                           "bits": a.size == n_events * -(-H // 8),
                           "cnt": a.size == n_events and a.max(initial=0) <= H,
                           "col": a.max(initial=0) < H, "idx": a.max(initial=0) < u.size}
                assert allowed[field]
            other = decode_tensors(sc2.get(dev, {}))[0].get("uemb")
            differ += other is None or not np.array_equal(u, other)
            uploads += 1
    assert uploads == sum(bool(logic.fed.test.of(d)) for d in range(logic.fed.n_devices))
    assert differ > 0


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_serve_and_evaluation_messages_and_reports(runs, mode: str) -> None:
    st, logic, r = runs[mode, "orig"]
    assert ("serve_ins" in r) == (mode == "push")       # push's second exchange is a phase
    for cid, nd in r.get("serve_ins", {}).items():
        _, sc = scopes(nd)
        assert "*" not in sc                                              # no broadcast
        for dev, arrays in sc.items():
            assert set(arrays) == {"topk"} and arrays["topk"].dtype == np.int32
            assert arrays["topk"].shape[1] == logic.c3.topk
            ids = arrays["topk"][arrays["topk"] >= 0]
            assert set(ids.tolist()) <= set(st.cands[int(dev)].tolist())
        assert scopes(r["serve_res"][cid])[1] == {}                       # nothing goes up
    for cid, nd in r["evaluate_ins"].items():
        assert scopes(nd)[1] == {}                        # the lists are on the devices already
        meta, up = scopes(r["evaluate_res"][cid])
        assert up == {}
        for rep in meta["devices"].values():
            assert set(rep) == REPORT_KEYS and rep["n"] == 0
            assert all(k.startswith("test_") for k in rep["metrics"])
    assert 0.0 <= r["metrics"]["test_recall@20"] <= 1.0 and r["metrics"]["eval_devices"] > 0
