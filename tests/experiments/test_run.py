"""experiments.run: argument/config handling, exit statuses, and a few end-to-end runs.

The slow tests run Flower (Ray) on the synthetic "tiny" set (30 devices): determinism,
cohort equivalence, a plug-in strategy defined here, a failing run, and one real
``flwr run`` through the default engine.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from clients.device import DeviceLogic
from experiments import flower_engine as fe
from experiments import run as er
from fedrec.errors import ConfigError
from fedrec.metrics import rank_metrics, ranks_from_scores
from fedrec.payload import SparseRows, add_sparse, get_sparse
from fedrec.protocol import DeviceReply, DeviceTask
from fedrec.results import read_rounds, read_summary
from strategies.aggregation import sparse_row_sums
from strategies.base import DeviceStrategy
from strategies.fedmf import FedMF

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TINY = ["synthetic-size=tiny", "eval-negatives=20", "num-rounds=3", "quiet=true"]


# ---- README how-to: a new device-level strategy (the README shows exactly these classes) ----
class PopularityDevice(DeviceLogic):
    """Uploads which items it interacted with; ranks its held-out items by global popularity."""

    def fit(self, task: DeviceTask) -> DeviceReply:
        items = np.unique(self.fed.device(task.device_id).train_items)       # [K] item ids
        upload = {}
        add_sparse(upload, "counts", SparseRows(items, np.ones((len(items), 1), np.float32)))
        return DeviceReply(device_id=task.device_id, upload=upload, num_examples=len(items))

    def evaluate(self, task: DeviceTask) -> DeviceReply:
        data = self.fed.device(task.device_id)
        counts = task.broadcast["counts"][:, 0]                               # [n_items]
        metrics = {}
        for split, target in (("valid", data.valid_item), ("test", data.test_item)):
            candidates = np.concatenate([[target], data.negatives])          # [1 + N], target first
            ranks = ranks_from_scores(counts[candidates][None, :], 0)        # [1]
            for name, values in rank_metrics(ranks, (10,)).items():
                metrics[f"{split}_{name.lower()}"] = float(values[0])
        return DeviceReply(device_id=task.device_id, metrics=metrics)


class FedPop(DeviceStrategy):
    """Federated most-popular: the cloud counts, per item, the devices that interacted with it."""

    name = "fedpop"
    device_cls = PopularityDevice

    def init_global(self) -> dict[str, np.ndarray]:
        return {"counts": np.zeros((self.cloud.n_items, 1), np.float32)}

    def aggregate(self, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        rows = [get_sparse(r.upload, "counts") for r in replies]
        sums, _ = sparse_row_sums(self.cloud.n_items, rows)                   # [n_items, 1]
        self.global_arrays["counts"] = sums.astype(np.float32)
        return {"items_seen": float((sums > 0).sum())}
# ---- end of the README how-to ----


class FailsInRound2(FedMF):
    """FedMF whose aggregation raises in round 2 (a crashing ServerApp)."""

    def aggregate(self, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        if rnd == 2:
            raise RuntimeError("planned failure in round 2")
        return super().aggregate(rnd, replies)


def sets(*pairs: str) -> list[str]:
    return [a for p in pairs for a in ("--set", p)]


# --------------------------------------------------------------------------- helpers
@pytest.mark.parametrize(("text", "value"), [
    ("0.05", 0.05), ("3", 3), ("true", True), ('"a b"', "a b"), ("ml-1m", "ml-1m"),
    ("pixel2:0.5,highend:0.5", "pixel2:0.5,highend:0.5"), ("[1, 2]", "[1, 2]"), ("", ""),
])
def test_parse_value_is_toml_scalar_or_plain_string(text, value):
    got = er.parse_value(text)
    assert got == value and type(got) is type(value)


def test_parse_sets_later_pairs_win_and_bad_pairs_name_the_fix():
    assert er.parse_sets(["lr=0.1", "dataset=ml-1m", "lr=0.5"]) == {"lr": 0.5, "dataset": "ml-1m"}
    with pytest.raises(ConfigError, match=r"--set 'num-rounds' is not key=value; write e\.g\."):
        er.parse_sets(["num-rounds"])


def test_read_run_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found; pass an existing .toml file"):
        er.read_run_config(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("lr = = 1\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        er.read_run_config(tmp_path / "bad.toml")
    (tmp_path / "nested.toml").write_text("lr = 0.1\n[train]\nlr = 1\n")
    with pytest.raises(ConfigError, match="train must be scalars"):
        er.read_run_config(tmp_path / "nested.toml")
    (tmp_path / "ok.toml").write_text('lr = 0.1\ndataset = "ml-1m"\n')
    assert er.read_run_config(tmp_path / "ok.toml") == {"lr": 0.1, "dataset": "ml-1m"}


def test_absolutize_resolves_paths_against_cwd(tmp_path):
    (tmp_path / "my.csv").write_text("x")
    flat = {"output-dir": "runs", "data-root": "data", "dataset": "my.csv"}
    out = er.absolutize(flat, tmp_path)
    assert out == {"output-dir": str(tmp_path / "runs"), "data-root": str(tmp_path / "data"),
                   "dataset": str(tmp_path / "my.csv")}
    (tmp_path / "ml-1m").mkdir()                     # a preset name stays a preset name
    kept = er.absolutize({"output-dir": "/abs", "data-root": "", "dataset": "synthetic"}, tmp_path)
    assert kept == {"output-dir": "/abs", "data-root": "", "dataset": "synthetic"}


def test_absolutize_pins_the_data_root_found_here(tmp_path, monkeypatch):
    # inside the FAB that flwr installs, <repo>/../shared/data does not exist
    monkeypatch.setenv("FEDREC_DATA", str(tmp_path))
    got = er.absolutize({"output-dir": "/abs", "data-root": "", "dataset": "ml-1m"}, tmp_path)
    assert got == {"output-dir": "/abs", "data-root": str(tmp_path), "dataset": "ml-1m"}
    monkeypatch.setenv("FEDREC_DATA", str(tmp_path / "missing"))   # not found: left empty,
    got = er.absolutize({"output-dir": "/abs", "data-root": "", "dataset": "ml-1m"}, tmp_path)
    assert got["data-root"] == ""                                 # the loader will say so


def test_run_names_are_path_safe_and_unique(tmp_path):
    assert er.make_run_name("fedmf", "synthetic", NOW) == "fedmf-synthetic-20260102T030405"
    assert er.make_run_name("pkg.mod:My Cls", "/data/x/u.data", NOW) == \
        "pkg.mod.My_Cls-u.data-20260102T030405"
    (tmp_path / "a").mkdir()
    (tmp_path / "a-2").mkdir()
    assert er.unique_name(tmp_path, "a") == "a-3"
    assert er.unique_name(tmp_path, "b") == "b"


def test_build_overrides_file_then_sets_then_paths(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('num-rounds = 7\nlr = 0.2\n')
    ov = er.build_overrides(str(cfg), ["lr=0.3"], tmp_path, NOW)
    assert ov == {"num-rounds": 7, "lr": 0.3, "output-dir": str(tmp_path / "runs"),
                  "run-name": "fedmf-synthetic-20260102T030405"}


@pytest.mark.parametrize(("n", "per", "want"), [(30, 8, 4), (30, 64, 1), (64, 64, 1),
                                                 (65, 64, 2), (6040, 256, 24), (1, 1, 1)])
def test_num_supernodes_is_one_client_per_shard(n, per, want):
    assert er.num_supernodes(n, per) == want


def test_to_toml_round_trips_through_tomllib():
    flat = {"a": 'quote " and \\ back', "b": True, "c": 3, "d": 0.1, "e": "ü", "f": False}
    assert tomllib.loads(fe.to_toml(flat)) == flat


def test_flower_commands_and_environment(tmp_path):
    env = fe.flower_env(tmp_path)
    for key, value in fe.FLOWER_ENV.items():
        assert env[key] == value
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    assert env["FLWR_HOME"] == str(tmp_path)
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    link = fe.superlink_command(4321)
    assert "--disable-runtime-dependency-installation" in link and "--simulation" in link
    assert link[link.index("--port") + 1] == "4321"
    cmd = fe.flwr_command(tmp_path / "app", tmp_path / "rc.toml", 4)
    assert cmd[1:4] == ["run", str(tmp_path / "app"), fe.CONNECTION] and "--stream" in cmd
    assert cmd[cmd.index("--federation-config") + 1] == \
        "num-supernodes=4 client-resources-num-cpus=1"


def test_stage_app_copies_fab_files_only(tmp_path):
    repo, dest = tmp_path / "repo", tmp_path / "dest"
    files = ["pyproject.toml", "pkg/a.py", "pkg/sub/b.json", "pkg/data.bin", ".venv/lib/x.py",
             ".git/c.py", "pkg/__pycache__/a.py", "runs/r/summary.json", "out2/s.json",
             "deep/build/x.py", "top/x.py"]
    for f in files:
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        (repo / f).write_text("x")
    (repo / ".gitignore").write_text("runs/\n/top/\nbuild/\n*.pyc\n")
    fe.stage_app(repo, dest, skip=(repo / "out2",))
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert got == [".gitignore", "pkg/a.py", "pkg/sub/b.json", "pyproject.toml"]


def test_ignored_dirs_reads_plain_directory_patterns():
    assert fe.ignored_dirs("runs/\n/data/\n*.pyc\nbuild/\n# c/\n[ab]/\n") == \
        ({"runs", "build"}, {"data"})


def write_summary(run_dir: Path, summary: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_outcome_reads_the_summary(tmp_path):
    write_summary(tmp_path / "ok", {"status": "finished", "rounds": 3, "wall_s": 1.25})
    assert er.outcome(tmp_path / "ok") == (0, "finished 3 rounds in 1.2 s")
    write_summary(tmp_path / "bad", {"status": "failed", "rounds_completed": 1,
                                     "error": "RuntimeError: boom"})
    assert er.outcome(tmp_path / "bad") == (1, "error: run failed after 1 round(s): RuntimeError: boom")
    write_summary(tmp_path / "cut", {"status": "running"})
    (tmp_path / "cut" / "rounds.jsonl").write_text('{"round": 1}\n{"round": 2}\n')
    assert er.outcome(tmp_path / "cut") == \
        (1, "error: run running after 2 round(s): the run stopped before its last round")
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "superlink.log").write_text("")
    status, line = er.outcome(tmp_path / "none")
    assert status == 1 and line.startswith("error: the run wrote no summary.json")
    assert line.endswith(f"see {tmp_path / 'none' / 'superlink.log'}")


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("args", "message"), [
    (sets("bogus=1"), "error: unknown run-config key(s) bogus; the valid keys are listed in "),
    (sets("strategy=nope"), "error: unknown strategy 'nope'; use one of "),
    (sets("strategy=nosuch.module:X"), "error: strategy 'nosuch.module:X' cannot be imported"),
    (sets("dataset=no-such-dataset"), "error: unknown dataset 'no-such-dataset'"),
    (sets("fraction-fit=0"), "error: fraction-fit must be in (0, 1]"),
    (sets("num-rounds=two"), "error: run-config 'num-rounds' = 'two' is not a valid int"),
    (["--run-config", "missing.toml"], "error: run-config file "),
    (sets("synthetic-size=tiny"), "error: eval-negatives = 99 but device "),  # > items unseen
])
def test_bad_input_is_one_line_exit_2_and_no_run_dir(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert er.main([*args, "--set", f"output-dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_existing_run_dir_is_bad_input(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    args = [*sets(*TINY, f"output-dir={tmp_path}", "run-name=taken")]
    assert er.main(args) == 2
    assert "already exists; pass another run-name" in capsys.readouterr().err


# --------------------------------------------------------------------------- end to end
def inprocess(out: Path, *pairs: str) -> int:
    return er.main(["--engine", "inprocess", *sets(*TINY, f"output-dir={out}", *pairs)])


def is_timing(key: str) -> bool:
    """Wall-clock fields of a round record (the only ones allowed to differ between runs)."""
    return key.endswith("wall_s") or key in ("elapsed_s", "eta_s")


def comparable(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if not is_timing(k)} for r in read_rounds(run_dir)]


@pytest.fixture(scope="module")
def cohort8(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort8")
    assert inprocess(out, "devices-per-client=8", "run-name=a") == 0
    return out / "a"


@pytest.mark.slow
def test_same_seed_gives_identical_rounds(cohort8, tmp_path):
    assert inprocess(tmp_path, "devices-per-client=8", "run-name=b") == 0
    first, second = comparable(cohort8), comparable(tmp_path / "b")
    assert len(first) == 3 and first == second
    assert first[-1]["test_hr@10"] > 0 and first[0]["devices_dropped"] > 0  # dropouts simulated
    assert read_summary(cohort8)["status"] == "finished"


def assert_same_rounds(one: list[dict], other: list[dict]) -> None:
    """Every non-timing field of every round agrees to 1e-6."""
    assert [sorted(r) for r in one] == [sorted(r) for r in other]
    for a, b in zip(one, other, strict=True):
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-6), key


@pytest.mark.slow
def test_one_device_per_client_equals_cohorts_of_8(cohort8, tmp_path, capsys):
    assert inprocess(tmp_path, "devices-per-client=1", "run-name=c") == 0
    assert "30 devices on 30 Flower clients" in capsys.readouterr().out
    assert_same_rounds(comparable(tmp_path / "c"), comparable(cohort8))


@pytest.mark.slow
def test_one_device_per_client_equals_cohorts_of_64(tmp_path, capsys):
    """100 devices: 100 Flower clients vs a full cohort of 64 and a partial one of 36."""
    common = ("synthetic-size=small", "max-devices=100", "num-rounds=2")
    assert inprocess(tmp_path, *common, "devices-per-client=64", "run-name=c64") == 0
    assert "100 devices on 2 Flower clients" in capsys.readouterr().out
    assert inprocess(tmp_path, *common, "devices-per-client=1", "run-name=c1") == 0
    assert "100 devices on 100 Flower clients" in capsys.readouterr().out
    one, cohorts = comparable(tmp_path / "c1"), comparable(tmp_path / "c64")
    assert len(one) == 2 and one[-1]["devices_ok"] > 0 and one[-1]["test_hr@10"] > 0
    assert_same_rounds(one, cohorts)


@pytest.mark.slow
def test_plugin_strategy_defined_in_this_file(tmp_path):
    assert inprocess(tmp_path, f"strategy={__name__}:FedPop", "run-name=pop") == 0
    rounds = read_rounds(tmp_path / "pop")
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(0 < r["agg_items_seen"] <= 60 and r["bytes_up"] > 0 for r in rounds)
    assert 0.0 <= rounds[-1]["test_ndcg@10"] <= rounds[-1]["test_hr@10"] <= 1.0
    assert read_summary(tmp_path / "pop")["status"] == "finished"


@pytest.mark.slow
def test_failed_run_keeps_finished_rounds_and_exits_1(tmp_path, capsys):
    assert inprocess(tmp_path, f"strategy={__name__}:FailsInRound2", "run-name=f") == 1
    err = capsys.readouterr().err
    assert "error: run failed after 1 round(s): RuntimeError: planned failure in round 2" in err
    assert [r["round"] for r in read_rounds(tmp_path / "f")] == [1]
    summary = read_summary(tmp_path / "f")
    assert summary["status"] == "failed" and summary["rounds_completed"] == 1


@pytest.mark.slow
def test_flwr_run_default_engine(cohort8, tmp_path, capfd):
    args = sets(*TINY, "num-rounds=2", "quiet=false", "devices-per-client=8",
                f"output-dir={tmp_path}", "run-name=e")
    assert er.main(args) == 0
    out, err = capfd.readouterr()                 # the flwr subprocess writes to fd 1/2
    assert "round 2/2 |" in out + err and f"run dir: {tmp_path / 'e'}" in out
    assert read_summary(tmp_path / "e")["status"] == "finished"
    assert comparable(tmp_path / "e") == comparable(cohort8)[:2]  # same numbers as in-process
    assert not list((fe.REPO / ".flwr").glob("e-*"))              # per-run FLWR_HOME removed
