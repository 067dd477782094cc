"""bench_attacks --render: tables and heatmap from results.csv alone, nothing is run."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from experiments import bench_attacks as B


def _row(attack: str, defence: str, fraction: float, er10: float, hr: float) -> dict:
    row = {k: 0 for k in B.COLUMNS}
    row.update(dataset="ml-1m", attack=attack, defence=defence, fraction=fraction, rounds=10,
               **{"er@10": er10, "er@5": er10, "test_hr@10": hr, "test_ndcg@10": hr / 2})
    return row


def test_render_writes_tables_from_the_csv_without_running(tmp_path: Path, monkeypatch) -> None:
    with (tmp_path / "results.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=B.COLUMNS)
        w.writeheader()
        for r in (_row("none", "none", 0.0, 0.0, 0.449), _row("fedrecattack", "none", 0.05, 1.0, 0.444),
                  _row("fedrecattack", "median", 0.05, 0.0, 0.445)):
            w.writerow(r)
    monkeypatch.setattr(B, "run_cell", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    B.main(["--dataset", "ml-1m", "--render", "--out", str(tmp_path), "--attacks", "none",
            "fedrecattack", "--defences", "none", "median", "hics", "--fractions", "0.05"])
    md = (tmp_path / "results.md").read_text()
    assert "10 rounds" in md
    assert "| fedrecattack | 1.000 | 0.000 |  |" in md  # hics never ran: blank
    assert "| none | 0.449 |  |  |" in md
    assert (tmp_path / "heatmap.png").stat().st_size > 0


def test_render_without_results_fails_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "none-yet"
    with pytest.raises(SystemExit, match=r"--render: no .*results.csv; run the matrix first"):
        B.main(["--render", "--out", str(out)])
    assert not out.exists()
