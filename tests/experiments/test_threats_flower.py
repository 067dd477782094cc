"""LDP + attack + defence through Flower's simulation give the plain loop's numbers.

One run (synthetic tiny, 2 rounds, 3 malicious devices with boosted PipAttack, Multi-Krum on
the cloud, Gaussian LDP on every device) through ``run_simulation`` and the same config in
``experiments.plain_loop``: every round's benign metrics, target exposure and detection
counts agree, and the Flower run writes privacy.json.
"""

from __future__ import annotations

import json
import math
import os

import pytest

from experiments.plain_loop import plain_loop
from fedrec.results import read_rounds, read_summary
from strategies.privacy import PRIVACY_FILE
from tests.clients.threat_cases import BASE

THREATS = {"attack": "pipattack", "attack-fraction": 0.1, "attack-scale": 10.0,
           "defence": "multi-krum", "defence-krum-fraction": 0.2,
           "ldp": "gaussian", "ldp-clip": "row", "ldp-bound": 1.0, "ldp-epsilon-mix": "200:0.5,inf:0.5"}
KEYS = ("er@5", "er@10", "test_hr@10", "test_ndcg@10", "valid_hr@10",
        "agg_def_flagged", "agg_def_flagged_malicious", "agg_malicious", "agg_ldp_reports")


@pytest.mark.slow
def test_threat_run_through_flower_equals_the_plain_loop(tmp_path) -> None:
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from flwr.client import ClientApp
    from flwr.simulation import run_simulation

    from experiments.client_app import make_client_fn
    from experiments.server_app import make_server_app

    ov = {**BASE, **THREATS, "output-dir": str(tmp_path), "run-name": "flower"}
    run_simulation(server_app=make_server_app(ov), client_app=ClientApp(client_fn=make_client_fn(ov)),
                   num_supernodes=math.ceil(30 / BASE["devices-per-client"]),
                   backend_config={"client_resources": {"num_cpus": 1}})
    assert read_summary(tmp_path / "flower")["status"] == "finished"
    flower = read_rounds(tmp_path / "flower")
    plain = plain_loop({**ov, "run-name": "plain"}, str(tmp_path / "plain"), verbose=False)
    assert len(flower) == len(plain) == 2
    for f, p in zip(flower, plain, strict=True):
        for k in KEYS:
            assert f[k] == pytest.approx(p[k], abs=1e-12), k
    assert flower[-1]["agg_def_flagged_malicious"] > 0 and flower[-1]["agg_malicious"] == 3
    privacy = json.loads((tmp_path / "flower" / PRIVACY_FILE).read_text())
    assert privacy["n_devices"] == 30 and 0 < privacy["n_unprotected"] < 30
