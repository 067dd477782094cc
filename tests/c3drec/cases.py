"""A tiny C3DRec run built the way the apps build it (synthetic tiny: 30 users, 60 items), and
the real messages of one round (every phase), carried by the round driver through a
DeviceHost in this process (no Flower server, no Ray)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from clients.host import DeviceHost
from experiments.setup import device_profiles, effective_config, resolve
from fedrec.c3drec.config import C3DRecConfig
from fedrec.c3drec.timeline import build_timeline
from fedrec.config import protocol_options
from fedrec.data.schema import Dataset
from fedrec.federated import load_for_run
from fedrec.payload import split_scopes, unpack
from fedrec.results import RunRecorder
from strategies.driver import InProcessTransport, run_round

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
        tcfg = protocol_options(cfg, C3DRecConfig).timeline(cfg.data.seed, cfg.data.max_devices)
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


def one_round(cfg: Any, st: Any, logic: Any) -> dict[str, Any]:
    """Round 1 with real messages, every phase: per phase kind, the message and the reply
    arrays per client slot (``<kind>_ins`` / ``<kind>_res``); and the round's record."""
    st.recorder.start({})
    profiles = device_profiles(logic.fed.n_devices, cfg.sim.device_mix, cfg.train.seed)
    host = DeviceHost(logic, profiles.__getitem__, cfg.train.seed, dropouts=False)
    transport = InProcessTransport([lambda nd: host.fit(nd, {})[0]] * st.expected_clients,
                                   record=True)
    run_round(st, 1, transport)
    out: dict[str, Any] = {"fit_ins": {}, "fit_res": {}, "evaluate_ins": {}, "evaluate_res": {}}
    for _, kind, slot, nd_in, nd_out in transport.seen:
        out.setdefault(f"{kind}_ins", {})[f"c{int(slot):02d}"] = nd_in
        out.setdefault(f"{kind}_res", {})[f"c{int(slot):02d}"] = nd_out
    out["metrics"] = st.log.records[-1]
    return out


def scopes(nd: list[np.ndarray]) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    arrays, meta = unpack(nd)
    return meta, split_scopes(arrays)
