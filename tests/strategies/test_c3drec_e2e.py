"""C3DRec pull and push end to end through Flower's simulation (2 rounds, synthetic tiny),
and the same numbers from the plain loop (no Flower, no Ray)."""

from __future__ import annotations

import json
import math
import os

import pytest

from experiments.plain_loop import plain_loop
from fedrec.results import read_rounds, read_summary
from tests.c3drec.cases import BASE

PER_CLIENT = 16


def overrides(mode: str, out: str, name: str) -> dict:
    return {**BASE, "strategy": f"c3drec-{mode}", "num-rounds": 2, "output-dir": out,
            "run-name": name, "devices-per-client": PER_CLIENT}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pull", "push"])
def test_two_rounds_through_flower_match_the_plain_loop(mode: str, tmp_path) -> None:
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from flwr.client import ClientApp
    from flwr.simulation import run_simulation

    from experiments.client_app import make_client_fn
    from experiments.server_app import make_server_app

    ov = overrides(mode, str(tmp_path), "flwr")
    loop = plain_loop(overrides(mode, str(tmp_path), "loop"), str(tmp_path / "loop"), verbose=False)
    n = json.loads((tmp_path / "loop" / "c3drec_cloud.json").read_text())["n_devices"]
    client = ClientApp(client_fn=make_client_fn(ov))
    run_simulation(server_app=make_server_app(ov), client_app=client,
                   num_supernodes=math.ceil(n / PER_CLIENT),
                   backend_config={"client_resources": {"num_cpus": 1}})
    summary, rounds = read_summary(tmp_path / "flwr"), read_rounds(tmp_path / "flwr")
    assert summary["status"] == "finished" and [r["round"] for r in rounds] == [1, 2]
    for r, ref in zip(rounds, loop, strict=True):
        assert r["devices_ok"] == n and r["devices_failed"] == 0
        assert (r["bytes_up"] > 0) == (mode == "push")
        for key in ("test_recall@20", "test_mrr@20", "test_all_recall@20", "test_events"):
            assert r[key] == pytest.approx(ref[key], abs=1e-12)
    cloud = json.loads((tmp_path / "flwr" / "c3drec_cloud.json").read_text())
    assert cloud["mode"] == mode
    assert cloud["model_bytes_wire"] < cloud["model_bytes_by_encoding"]["dense"]
