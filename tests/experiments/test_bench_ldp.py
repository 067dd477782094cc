"""bench_ldp's outputs: rows ordered (reference, then mechanism by epsilon), PNG written."""

from __future__ import annotations

import math
from pathlib import Path

from experiments.bench_ldp import write_outputs


def _row(mech: str, eps: float, hr: float) -> dict:
    return {"dataset": "ml-1m", "mechanism": mech, "epsilon": eps, "total_epsilon": eps * 10,
            "test_hr@10": hr, "test_ndcg@10": hr / 2, "rounds": 10.0, "wall_s": 1.0}


def test_rows_are_ordered_and_the_curve_is_drawn(tmp_path: Path) -> None:
    rows = [_row("laplace", 1000.0, 0.30), _row("gaussian", math.inf, 0.34),
            _row("gaussian", 10.0, 0.26), _row("none", math.inf, 0.45), _row("gaussian", 1.0, 0.08)]
    write_outputs(tmp_path, rows, "header")
    body = [ln for ln in (tmp_path / "results.md").read_text().splitlines() if ln.startswith("| ")]
    assert [ln.split(" | ")[0:2] for ln in body[1:]] == [
        ["| none", "inf"], ["| gaussian", "1"], ["| gaussian", "10"], ["| gaussian", "inf"],
        ["| laplace", "1000"]]
    assert "| gaussian | 10 | 100 | 0.260 | 0.130 |" in body
    assert (tmp_path / "curve.png").stat().st_size > 0
