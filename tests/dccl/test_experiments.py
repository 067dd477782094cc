"""python -m experiments.dccl on a tiny config: a sweep writes its table, paired per-user
differences and plot; the paired interval is computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments.dccl_plots import paired_delta
from tests.dccl.cases import TINY


def test_paired_delta_by_hand():
    a, b = {0: 1.0, 1: 0.0, 2: 1.0, 3: 1.0}, {0: 0.0, 1: 0.0, 2: 1.0, 3: 0.0, 9: 1.0}
    d = np.array([1.0, 0.0, 0.0, 1.0])                     # user 9 is not in both
    got = paired_delta(a, b)
    assert got["users"] == 4 and got["delta"] == pytest.approx(0.5)
    assert got["ci95"] == pytest.approx(1.96 * d.std(ddof=1) / 2)


def test_a_sweep_writes_its_table_paired_differences_and_plot(tmp_path):
    from experiments import dccl

    toml = tmp_path / "tiny.toml"
    toml.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in TINY.items()))
    out = tmp_path / "out"
    assert dccl.main(["sweep", "beta", "--values", "0,0.5", "--ref", "0.5",
                      "--run-config", str(toml), "--out", str(out), "--threads", "1"]) == 0
    rows = json.loads((out / "tiny" / "sweep_beta.json").read_text())["rows"]
    assert set(rows) == {"dccl-beta=0", "dccl-beta=0.5"}
    assert "vs_ref" in rows["dccl-beta=0"]["paired"] and "vs_ref" not in rows["dccl-beta=0.5"]["paired"]
    assert rows["dccl-beta=0"]["paired"]["vs_ref"]["users"] == 30
    md = (out / "tiny" / "sweep_beta.md").read_text()
    assert "(vs dccl-beta=0.5)" in md and "| dccl-beta=0.5 |" in md
    assert (out / "tiny" / "sweep_beta.png").stat().st_size > 0
