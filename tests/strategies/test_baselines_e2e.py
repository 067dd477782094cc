"""FedAvg, FedNCF and PFedRec end to end through Flower's simulation (2 rounds, synthetic tiny)."""

from __future__ import annotations

import csv
import math
import os

import numpy as np
import pytest
from flwr.common import ndarray_to_bytes

from fedrec.config import DataConfig
from fedrec.federated import prepare_loo
from fedrec.results import read_rounds, read_summary

N_DEVICES = 30            # synthetic "tiny": 30 users x 60 items
PER_CLIENT = 16


def run(strategy: str, out: str) -> None:
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from flwr.client import ClientApp
    from flwr.simulation import run_simulation

    from experiments.client_app import make_client_fn
    from experiments.server_app import make_server_app

    ov = {"strategy": strategy, "num-rounds": 2, "synthetic-size": "tiny", "eval-negatives": 20,
          "devices-per-client": PER_CLIENT, "simulate-dropouts": False, "output-dir": out,
          "run-name": strategy, "quiet": True}
    client = ClientApp(client_fn=make_client_fn(ov))
    run_simulation(server_app=make_server_app(ov), client_app=client,
                   num_supernodes=math.ceil(N_DEVICES / PER_CLIENT),
                   backend_config={"client_resources": {"num_cpus": 1}})


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fedavg", "fedncf", "pfedrec"])
def test_two_rounds_through_flower(strategy, tmp_path):
    run(strategy, str(tmp_path))
    summary = read_summary(tmp_path / strategy)
    rounds = read_rounds(tmp_path / strategy)
    assert summary["status"] == "finished" and summary["rounds"] == 2
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert r["devices_ok"] == N_DEVICES and r["devices_failed"] == 0
        assert 0.0 <= r["test_ndcg@10"] <= r["test_hr@10"] <= 1.0
        assert r["eval_devices"] == N_DEVICES and math.isfinite(r["train_loss"])
    n_items = prepare_loo(DataConfig(synthetic_size="tiny", eval_negatives=20)).n_items
    with (tmp_path / strategy / "devices.csv").open() as fh:
        per_device = {float(row["bytes_up"]) for row in csv.DictReader(fh)}
    if strategy == "fedavg":   # dense MF upload: item table [I, 32] + item biases [I], float32
        dense = len(ndarray_to_bytes(np.zeros((n_items, 32), np.float32))) + len(
            ndarray_to_bytes(np.zeros(n_items, np.float32)))
        assert rounds[0]["bytes_up"] == N_DEVICES * dense and per_device == {2.0 * dense}
    else:                      # touched rows only: sizes differ between devices
        assert len(per_device) > 1
