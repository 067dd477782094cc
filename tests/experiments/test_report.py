"""experiments.report on hand-written run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import report as rp
from fedrec.errors import FedrecError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(root: Path, name: str, rounds: list[dict], summary: dict | None = None,
              flat: dict | None = None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))
    if summary is not None:
        (run / "summary.json").write_text(json.dumps(summary))
    if flat is not None:
        (run / "config.json").write_text(json.dumps({"flat": flat}))
    return run


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    a = write_run(tmp_path, "fedmf-a", [
        {"round": 1, "bytes_up": 1e6, "bytes_down": 2e6, "test_hr@10": 0.3, "test_ndcg@10": 0.1,
         "train_loss": 0.7, "elapsed_s": 3.0},
        {"round": 2, "bytes_up": 1e6, "bytes_down": 2e6, "train_loss": 0.6, "elapsed_s": 5.0},
        {"round": 3, "bytes_up": 2e6, "bytes_down": 2e6, "test_hr@10": 0.5, "test_ndcg@10": 0.2,
         "train_loss": 0.65, "elapsed_s": 7.0},
    ], {"status": "finished", "wall_s": 7.5}, {"strategy": "fedmf", "dataset": "synthetic"})
    b = write_run(tmp_path, "killed-b", [
        {"round": 1, "bytes_up": 5e5, "bytes_down": 5e5, "test_hr@10": 0.6, "test_ndcg@10": 0.4,
         "train_loss": None, "elapsed_s": 2.5},
    ])
    return [a, b]


def test_rows_hold_final_best_bytes_and_wall(runs):
    a, b = (rp.load_run(p) for p in runs)
    assert rp.row(a, "test_hr@10") == {
        "run": "fedmf-a", "strategy": "fedmf", "dataset": "synthetic", "status": "finished",
        "rounds": "3", "HR@10": "0.5000", "NDCG@10": "0.2000",
        "best test_hr@10": "0.5000 (r3)", "up MB": "4.0", "down MB": "6.0", "wall s": "7.5"}
    assert rp.row(b, "test_hr@10") == {
        "run": "killed-b", "strategy": "?", "dataset": "?", "status": "unknown", "rounds": "1",
        "HR@10": "0.6000", "NDCG@10": "0.4000", "best test_hr@10": "0.6000 (r1)",
        "up MB": "0.5", "down MB": "0.5", "wall s": "2.5"}


def test_best_of_a_loss_is_its_minimum_and_missing_values_are_skipped(runs):
    a, b = (rp.load_run(p) for p in runs)
    assert rp.best(a, "train_loss") == (0.6, 2)
    assert rp.best(b, "train_loss") == (None, None)
    assert rp.series(a, "test_hr@10") == ([1, 3], [0.3, 0.5])


def test_table_is_aligned_text():
    table = rp.format_table([{"run": "a", "HR": "0.5"}, {"run": "long-name", "HR": "-"}])
    assert table.splitlines() == ["run        HR", "---------  ---", "a          0.5",
                                  "long-name  -"]


def test_report_prints_the_table_and_saves_two_pngs(runs, tmp_path, capsys):
    assert rp.main([str(p) for p in runs] + ["--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["run", "strategy", "dataset", "status", "rounds", "HR@10",
                              "NDCG@10", "best", "test_hr@10", "up", "MB", "down", "MB", "wall", "s"]
    assert out[2].startswith("fedmf-a ") and out[3].startswith("killed-b ")
    assert out[4:] == [f"saved {tmp_path / 'out' / 'test_hr_10.png'}",
                       f"saved {tmp_path / 'out' / 'bytes.png'}"]
    for name in ("test_hr_10.png", "bytes.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG_MAGIC


def test_default_out_is_report_next_to_the_first_run(runs):
    saved = rp.report([str(p) for p in runs], None, "test_ndcg@10")
    assert saved == [runs[0].parent / "report" / "test_ndcg_10.png",
                     runs[0].parent / "report" / "bytes.png"]


def test_a_dir_without_rounds_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert rp.main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {tmp_path / 'empty'} has no rounds.jsonl; pass a run directory "
                   "(printed by experiments.run) whose run finished at least one round\n")
    write_run(tmp_path, "none", [])
    with pytest.raises(FedrecError, match="rounds.jsonl is empty; the run finished no round"):
        rp.load_run(tmp_path / "none")


def test_an_unknown_metric_lists_the_available_ones(runs, capsys):
    assert rp.main([str(runs[0]), "--metric", "test_hr@5"]) == 2
    assert capsys.readouterr().err == ("error: metric 'test_hr@5' is in no run; pass --metric one "
                                       "of test_hr@10, test_ndcg@10, train_loss\n")
