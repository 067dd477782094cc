"""Flower ClientApp: every virtual client is a ``DeviceHost`` of the run's protocol.

The device logic (and the per-device data view) is built once per worker process and
cached, so a cohort round costs the devices' work, not a reload.
"""

from __future__ import annotations

import functools

import torch
from flwr.client import ClientApp
from flwr.common import Context

from clients.device import DeviceLogic
from clients.host import DeviceHost, Faults
from experiments.setup import device_profiles, effective_config, resolve


@functools.lru_cache(maxsize=2)
def _logic(items: tuple) -> DeviceLogic:
    cfg, cls = resolve(dict(items))
    return cls.device_cls(cfg, cls.prepare_data(cfg))


def make_client_fn(overrides: dict | None = None):
    def client_fn(context: Context):
        torch.set_num_threads(1)  # tiny per-device models: 2 threads were 2-6x slower here
        flat = effective_config(context.run_config, overrides or {})
        cfg, _ = resolve(flat)
        logic = _logic(tuple(sorted(flat.items())))
        profiles = device_profiles(logic.fed.n_devices, cfg.sim.device_mix, cfg.train.seed)
        faults = Faults(cfg.sim.fault_unavailable, cfg.sim.fault_crash, cfg.sim.deadline_s)
        root = context.node_config.get("state-dir")   # else the host's default
        part = context.node_config.get("partition-id")
        return DeviceHost(logic, profiles.__getitem__, cfg.train.seed,
                          dropouts=cfg.sim.simulate_dropouts, faults=faults,
                          state_root=str(root) if root else None,
                          partition=part if isinstance(part, int) else None).to_client()

    return client_fn


app = ClientApp(client_fn=make_client_fn())
