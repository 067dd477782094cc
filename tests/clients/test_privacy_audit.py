"""Privacy audit on real payloads: the FitIns a strategy sends, the FitRes a DeviceHost returns
(the exact Flower messages, without Ray), fed back into the strategy's ``aggregate_fit``.

A device upload may hold only the protocol's declared fields: FedMF the touched item rows
(positives and sampled negatives, sorted so positives cannot be told by position) of the
item table and biases; FedAvg the dense change of each shared parameter, never the private
user vector and no item ids at all. The per-device JSON report holds only status, error,
example count, costs and the declared metrics.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy

from clients.host import DeviceHost
from clients.trainer import local_examples
from experiments.setup import device_profiles
from fedrec.payload import split_scopes, unpack
from fedrec.protocol import FIT, device_rng
from tests.clients.threat_cases import build

REPORT_KEYS = {"status", "error", "n", "metrics", "costs"}
LDP_METRICS = {"ldp_epsilon", "ldp_delta", "ldp_scale", "ldp_sensitivity", "ldp_gaussian"}


class Proxy(ClientProxy):
    """A registered client slot; the test carries its messages by hand."""

    def get_properties(self, *a, **k): raise NotImplementedError
    def get_parameters(self, *a, **k): raise NotImplementedError
    def fit(self, *a, **k): raise NotImplementedError
    def evaluate(self, *a, **k): raise NotImplementedError
    def reconnect(self, *a, **k): raise NotImplementedError


def fit_round(tmp_path, **overrides):
    """One real fit round: (strategy, device logic, {client cid: (header meta, scopes)})."""
    torch.set_num_threads(1)
    cfg, st, logic = build(tmp_path, **overrides)
    manager = SimpleClientManager()
    for slot in range(st.expected_clients):
        manager.register(Proxy(f"c{slot:02d}"))
    st.recorder.start({})
    profiles = device_profiles(logic.fed.n_devices, cfg.sim.device_mix, cfg.train.seed)
    host = DeviceHost(logic, profiles.__getitem__, cfg.train.seed, dropouts=False)
    results, captured = [], {}
    for proxy, ins in st.configure_fit(1, None, manager):  # the strategy ignores `parameters`
        nd, n, metrics = host.fit(parameters_to_ndarrays(ins.parameters), ins.config)
        assert metrics == {}  # nothing travels outside the packed payload
        arrays, meta = unpack(nd)
        captured[proxy.cid] = (meta, split_scopes(arrays))
        results.append((proxy, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(nd), n, metrics)))
    st.aggregate_fit(1, results, [])
    return st, logic, captured


def touched_rows(logic, d: int) -> np.ndarray:
    """The rows FedMF declares: unique(positives + sampled negatives) of every local epoch."""
    rng, t = device_rng(logic.cfg.train.seed, 1, d, FIT), logic.cfg.train
    data = logic.fed.device(d)
    return np.unique(np.concatenate([local_examples(data, logic.fed.n_items, t.num_negatives, rng)[0]
                                     for _ in range(t.local_epochs)]))


@pytest.mark.parametrize("ldp", ["none", "laplace"])
def test_fedmf_uploads_only_the_touched_item_rows(tmp_path, ldp: str) -> None:
    # each device's own upload on the wire (host-reduce=false; with it, see the next test)
    st, logic, captured = fit_round(tmp_path, ldp=ldp, ldp_epsilon_mix="50:1", host_reduce=False)
    metrics = {"loss"} | (LDP_METRICS if ldp != "none" else set())
    seen = 0
    for meta, scopes in captured.values():
        assert set(meta) == {"devices"} and set(scopes) == set(meta["devices"])
        for dev, up in scopes.items():
            rep = meta["devices"][dev]
            assert set(rep) == REPORT_KEYS and set(rep["metrics"]) == metrics
            assert set(up) == {"item_emb.weight.idx", "item_emb.weight.val",
                               "item_bias.idx", "item_bias.val"}
            rows = touched_rows(logic, int(dev))
            positives = np.unique(logic.fed.device(int(dev)).train_items)
            for table, width in (("item_emb.weight", 8), ("item_bias", 1)):
                np.testing.assert_array_equal(up[f"{table}.idx"], rows)  # exactly the declared rows
                assert up[f"{table}.idx"].dtype == np.int64
                assert up[f"{table}.val"].dtype == np.float32 and up[f"{table}.val"].shape == (len(rows), width)
            assert len(rows) > len(positives) and set(positives) <= set(rows)
            t = logic.cfg.train
            assert rep["n"] == t.local_epochs * len(positives) * (1 + t.num_negatives)
            seen += 1
    assert seen == logic.fed.n_devices and st.log._cur["devices_ok"] == seen


def test_fedmf_cohort_sums_carry_no_per_device_rows(tmp_path) -> None:
    """With host reduction a cohort's message holds only sums over its devices: per row the
    summed deltas and how many devices sent it, and the cohort's totals; no device scope."""
    st, logic, captured = fit_round(tmp_path)
    sums = {f"{t}.{k}" for t in ("item_emb.weight", "item_bias") for k in ("rows", "sum", "count")}
    seen = 0
    for meta, scopes in captured.values():
        assert set(meta) == {"devices"} and set(scopes) == {"+"}
        part = scopes["+"]
        assert set(part) == sums | {"n"}
        touched = np.unique(np.concatenate([touched_rows(logic, int(d)) for d in meta["devices"]]))
        for table in ("item_emb.weight", "item_bias"):
            np.testing.assert_array_equal(part[f"{table}.rows"], touched)
            assert part[f"{table}.sum"].dtype == np.float64
        counts = sum(np.isin(touched, touched_rows(logic, int(d))).astype(int) for d in meta["devices"])
        np.testing.assert_array_equal(part["item_emb.weight.count"], counts)
        for rep in meta["devices"].values():
            assert set(rep) == REPORT_KEYS and set(rep["metrics"]) == {"loss"}
        seen += len(meta["devices"])
    assert seen == logic.fed.n_devices and st.log._cur["devices_ok"] == seen


def test_fedavg_uploads_dense_shared_parameters_and_no_item_ids(tmp_path) -> None:
    st, _, captured = fit_round(tmp_path, strategy="fedavg")
    shapes = {k: v.shape for k, v in st.global_arrays.items()}
    assert set(shapes) == {"item_emb.weight", "item_bias"}  # user_emb.weight is private
    for meta, scopes in captured.values():
        for dev, up in scopes.items():
            assert {k: v.shape for k, v in up.items()} == shapes
            assert all(v.dtype == np.float32 for v in up.values())  # no integer arrays: no ids
            assert set(meta["devices"][dev]) == REPORT_KEYS
            assert set(meta["devices"][dev]["metrics"]) == {"loss"}
