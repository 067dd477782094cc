"""A tiny C3DRec run built the way the apps build it (synthetic tiny: 30 users, 60 items), and
the real Flower messages of one round, carried by hand through a DeviceHost (no Ray)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.common import (
    Code,
    EvaluateRes,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy

from clients.c3drec_device import c3drec_options
from clients.host import DeviceHost
from experiments.setup import device_profiles, effective_config, resolve
from fedrec.c3drec.timeline import build_timeline
from fedrec.data.schema import Dataset
from fedrec.federated import load_for_run
from fedrec.payload import split_scopes, unpack
from fedrec.results import RunRecorder

BASE = {"dataset": "synthetic", "synthetic-size": "tiny", "simulate-dropouts": False,
        "num-rounds": 1, "quiet": True, "devices-per-client": 8,
        "c3drec-embedding-dim": 4, "c3drec-hidden-dim": 6, "c3drec-max-len": 5,
        "c3drec-global-epochs": 1, "c3drec-global-batch": 64, "c3drec-min-user-clicks": 5,
        "c3drec-agp-steps": 2, "c3drec-agp-every": 0.25, "c3drec-candidate-proportion": 0.2,
        "c3drec-device-batch": 8}


def flat_config(**overrides: Any) -> dict[str, Any]:
    return effective_config({}, {**BASE, **{k.replace("_", "-"): v for k, v in overrides.items()}})


def dataset(**overrides: Any) -> Dataset:
    cfg, _ = resolve(flat_config(**overrides))
    return load_for_run(cfg.data)


def build(tmp_path: Any, data: Dataset | None = None, **overrides: Any) -> tuple[Any, Any, Any]:
    """(cfg, strategy, device logic); ``data`` replaces the configured dataset."""
    torch.set_num_threads(1)
    cfg, cls = resolve(flat_config(**overrides))
    if data is None:
        fed = cls.prepare_data(cfg)
    else:
        tcfg = c3drec_options(cfg).timeline(cfg.data.seed, cfg.data.max_devices)
        fed = build_timeline(data, tcfg)
    return cfg, cls(cfg=cfg, fed=fed, recorder=RunRecorder(tmp_path)), cls.device_cls(cfg, fed)


def shuffle_clicks(data: Dataset, lo: int, hi: int, seed: int = 0) -> Dataset:
    """The same table with the items of the clicks in [lo, hi) permuted among those rows:
    every device's clicks in that window change, their timestamps and item set do not."""
    df = data.interactions.copy()
    ts = df["ts"].to_numpy()
    idx = np.flatnonzero(((df["behavior"] == "click").to_numpy()) & (ts >= lo) & (ts < hi))
    df.loc[idx, "item"] = df["item"].to_numpy()[np.random.default_rng(seed).permutation(idx)]
    return Dataset(data.name, df, data.has_time, data.user_features, data.item_features)


class Proxy(ClientProxy):
    """A registered client slot; the test carries its messages by hand."""

    def get_properties(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704
    def get_parameters(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704
    def fit(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704
    def evaluate(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704
    def reconnect(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704


def one_round(cfg: Any, st: Any, logic: Any) -> dict[str, Any]:
    """Fit + evaluate round 1 with real messages: the raw FitIns/FitRes/EvaluateIns/EvaluateRes
    arrays per client slot, and the strategy's evaluation metrics."""
    manager = SimpleClientManager()
    for slot in range(st.expected_clients):
        manager.register(Proxy(f"c{slot:02d}"))
    st.recorder.start({})
    profiles = device_profiles(logic.fed.n_devices, cfg.sim.device_mix, cfg.train.seed)
    host = DeviceHost(logic, profiles.__getitem__, cfg.train.seed, dropouts=False)
    out: dict[str, Any] = {"fit_ins": {}, "fit_res": {}, "eval_ins": {}, "eval_res": {}}
    results = []
    for proxy, ins in st.configure_fit(1, None, manager):
        nd_in = parameters_to_ndarrays(ins.parameters)
        nd, n, metrics = host.fit(nd_in, ins.config)
        assert metrics == {} and ins.config == {}
        out["fit_ins"][proxy.cid], out["fit_res"][proxy.cid] = nd_in, nd
        results.append((proxy, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(nd), n, metrics)))
    st.aggregate_fit(1, results, [])
    results = []
    for proxy, ins in st.configure_evaluate(1, None, manager):
        nd_in = parameters_to_ndarrays(ins.parameters)
        loss, n, metrics = host.evaluate(nd_in, ins.config)
        out["eval_ins"][proxy.cid], out["eval_res"][proxy.cid] = nd_in, metrics
        results.append((proxy, EvaluateRes(Status(Code.OK, ""), loss, n, metrics)))
    out["metrics"] = st.aggregate_evaluate(1, results, [])[1]
    return out


def scopes(nd: list[np.ndarray]) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    arrays, meta = unpack(nd)
    return meta, split_scopes(arrays)
