"""Bad input to ``python -m experiments.run`` (issue 12, classes 5-7): every case is one
``error: <problem>; <fix>`` line on stderr, exit status 2, before Flower starts, and no run
directory; options a run ignores are one warning line each and the run goes on.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments import checks
from experiments import run as er
from fedrec.config import parse_run_config
from fedrec.errors import ConfigError
from strategies.c3drec_push import C3DRecPush
from strategies.fedmf import FedMF
from strategies.fedncf import FedNCF
from strategies.pfedrec import PFedRec

SMALL = ["synthetic-size=tiny", "eval-negatives=20", "quiet=true"]


def sets(*pairs: str) -> list[str]:
    return [a for p in pairs for a in ("--set", p)]


def no_flower(*args: object) -> None:
    raise AssertionError("Flower was started for a config that should have been rejected")


@pytest.fixture
def reject(tmp_path, capsys, monkeypatch):
    """main(args) must print one error line, return 2, start nothing and write no run dir."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEDREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(er.ENGINES, "flwr", no_flower)

    def run(*pairs: str, out: Path | None = None) -> str:
        out = out or tmp_path / "out"
        status = er.main(sets(*pairs, f"output-dir={out}"))
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert status == 2
        assert not out.exists() and not list((tmp_path / "runs").glob("*"))
        return err.rstrip("\n")
    return run


# --------------------------------------------------------------------------- class 5
@pytest.mark.parametrize("seed", ["-1", str(2**63), str(2**32)])
def test_seed_out_of_range(reject, seed):
    assert reject(f"seed={seed}") == (f"error: seed = {seed} is out of range; pass --set "
                                      "seed=<an int from 0 to 4294967295>")


def test_empty_dataset(reject):
    assert reject("dataset=").startswith("error: dataset is empty; pass --set dataset=<a preset")


def test_embedding_too_big_for_memory(reject):
    err = reject("embedding-dim=100000000")
    assert err.startswith("error: embedding-dim=100000000 needs about ")
    assert "GiB available; pass --set embedding-dim=" in err


@pytest.mark.parametrize(("pairs", "key"), [
    (("strategy=c3drec-pull", "attack=noise"), "attack=noise"),
    (("strategy=c3drec-push", "attack=fake-random"), "attack=fake-random"),
    (("strategy=c3drec-push", "defence=krum"), "defence=krum"),
    (("strategy=c3drec-pull", "defence=median"), "defence=median"),
])
def test_attacks_and_defences_need_a_shared_model(reject, pairs, key):
    err = reject(*pairs, "run-name=r")
    strategy = pairs[0].split("=")[1]
    assert err == (f"error: {key} needs devices that send updates of a shared model, which "
                   f"{strategy} does not have; use strategy=fedavg | fedmf | fedncf | pfedrec, "
                   f"or {key.split('=')[0]}=none")
    assert "krum" not in err.replace(key, "")


def test_ldp_with_a_strategy_that_uploads_nothing(reject):
    assert reject("strategy=c3drec-pull", "ldp=laplace") == (
        "error: ldp=laplace protects device uploads, but c3drec-pull devices upload nothing; "
        "use strategy=c3drec-push, or ldp=none")


def test_ldp_with_c3drec_push_is_accepted(tmp_path):
    run_dir, _ = er.validate({"strategy": "c3drec-push", "ldp": "laplace", "run-name": "p",
                              "output-dir": str(tmp_path / "out")})
    assert run_dir == tmp_path / "out" / "p" and not run_dir.parent.exists()


def test_rejected_c3drec_config_leaves_no_run_dir_and_allows_a_retry(reject, tmp_path):
    reject("strategy=c3drec-pull", "ldp=gaussian", "run-name=again")
    run_dir, n = er.validate({"strategy": "c3drec-pull", "run-name": "again",
                              "output-dir": str(tmp_path / "out")})
    assert run_dir == tmp_path / "out" / "again" and n > 0
    assert not (tmp_path / "out").exists()        # validation builds no cloud model, writes nothing


def test_output_dir_under_a_file(reject, tmp_path):
    (tmp_path / "afile").write_text("")
    err = reject(*SMALL, out=tmp_path / "afile" / "x")
    assert err == (f"error: output-dir {tmp_path / 'afile' / 'x'} cannot be created: "
                   f"{tmp_path / 'afile'} is a file; pass --set output-dir=<a folder you can "
                   "write>")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_output_dir_that_cannot_be_written(reject):
    err = reject(*SMALL, out=Path("/proc/fedrec-x"))
    assert err.startswith("error: output-dir /proc/fedrec-x cannot be written: a file cannot be "
                          "created in /proc (")
    assert err.endswith("); pass --set output-dir=<a folder you can write>")


@pytest.mark.parametrize("n", [-1, -5])
def test_negative_num_supernodes(n):
    with pytest.raises(ConfigError) as err:
        checks.check_num_supernodes(n)
    assert str(err.value) == (f"--num-supernodes {n} is negative; pass a number >= 1, or leave it "
                              "out for one Flower client per devices-per-client devices")
    checks.check_num_supernodes(0)   # automatic
    checks.check_num_supernodes(3)


@pytest.mark.parametrize(("mix", "message"), [
    ("pixel9:1", ("error: device-mix: unknown device tier 'pixel9' in 'pixel9:1'; valid tiers: "
                  "highend, iphone8plus, lowend, pixel2")),
    ("pixel2:0", ("error: device-mix: weight of tier 'pixel2' must be a positive number, got 0; "
                  "write e.g. pixel2:1 (valid tiers: highend, iphone8plus, lowend, pixel2)")),
])
def test_device_mix_is_checked_at_parse_time(reject, mix, message):
    assert reject(f"device-mix={mix}") == message


def test_negative_round_timeout(reject):
    assert reject("round-timeout-s=-1") == \
        "error: round-timeout-s must be >= 0 seconds (0 = no timeout)"


def test_truncated_gzip_dataset(reject, tmp_path):
    lines = "".join(f"{u}::{i}::4::{978300000 + i}\n" for u in range(1, 200) for i in range(1, 40))
    blob = gzip.compress(lines.encode())
    (tmp_path / "r.dat.gz").write_bytes(blob[: len(blob) // 2])
    assert reject(f"dataset={tmp_path / 'r.dat.gz'}").startswith(
        f"error: {tmp_path / 'r.dat.gz'}: truncated or damaged gzip file (")


@pytest.mark.parametrize(("content", "message"), [
    (b"", "file is empty; give a data file"),
    (b"1::2::\xff\xfe::4\n", ("not utf-8 text (invalid start byte at byte 6 of a block); the file "
                              "is damaged or not a text data file")),
])
def test_empty_and_unreadable_dataset_files(reject, tmp_path, content, message):
    (tmp_path / "r.dat").write_bytes(content)
    err = reject(f"dataset={tmp_path / 'r.dat'}")
    assert err.startswith(f"error: {tmp_path / 'r.dat'}: {message}")


def test_missing_dataset_file(reject, tmp_path):
    assert reject(f"dataset={tmp_path / 'nope.dat'}") == (
        f"error: {tmp_path / 'nope.dat'}: file not found (looked in the working folder and the "
        "data root); check the path")


# --------------------------------------------------------------------------- class 6
def test_type_error_hint_names_set(reject):
    assert reject("num-rounds=two") == ("error: run-config 'num-rounds' = 'two' is not a valid "
                                        "int; pass e.g. --set num-rounds=<int>")


def test_unknown_key_shows_the_closest_keys(reject):
    assert reject("embeding-dim=8") == (
        "error: unknown run-config key(s) embeding-dim; did you mean embedding-dim, "
        "c3drec-embedding-dim? (all keys: README.md, 'Run options')")


def test_too_many_eval_negatives_names_the_key(reject):
    assert reject("synthetic-size=tiny") == (
        "error: eval-negatives = 99 but device 4 has only 35 items it never saw (57 items); "
        "pass --set eval-negatives=35 or less, or --set eval-protocol=full")


# --------------------------------------------------------------------------- class 7
@pytest.mark.parametrize("name", ["../x", "/tmp/abs", "a/b", "..", "a\\b"])
def test_run_name_stays_inside_output_dir(reject, name):
    assert reject(f"run-name={name}") == (
        f"error: run-name = {name!r} must be a folder name inside output-dir (no '/', '\\' or "
        "'..'); pass e.g. --set run-name=my-run, or --set output-dir=<folder>")


# --------------------------------------------------------------------------- warnings
def test_ignored_options_are_one_warning_line_each(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    given = {k: v for k, v in (p.split("=") for p in SMALL)}
    overrides = {**given, "eval-negatives": 20, "quiet": True, "c3drec-topk": 5,
                 "pfedrec-lr-eta": 1.0, "ldp-bound": 2.0, "attack-fraction": 0.2,
                 "defence-beta": 0.1,   # the default value: not reported
                 "output-dir": str(tmp_path / "out"), "run-name": "w"}
    er.validate(overrides)
    assert capsys.readouterr().err.splitlines() == [
        "warning: c3drec-topk, pfedrec-lr-eta are ignored by strategy fedmf",
        "warning: ldp-bound is ignored while ldp=none",
        "warning: attack-fraction is ignored while attack=none",
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("cls", "key", "flat", "warned"), [
    (FedMF, "fedncf-optimizer", {"strategy": "fedmf"}, True),
    (FedNCF, "fedncf-optimizer", {"strategy": "fedncf"}, False),
    (PFedRec, "pfedrec-lr-eta", {"strategy": "pfedrec"}, False),
    (C3DRecPush, "c3drec-topk", {"strategy": "c3drec-push"}, False),
    (C3DRecPush, "pfedrec-lr-eta", {"strategy": "c3drec-push"}, True),
    (FedMF, "attack-fraction", {"strategy": "fedmf", "attack": "noise"}, False),
    (FedMF, "ldp-bound", {"strategy": "fedmf", "ldp": "none"}, True),
])
def test_ignored_options_follow_strategy_and_switches(cls, key, flat, warned):
    assert bool(checks.ignored_options(cls, flat, [key])) == warned


# --------------------------------------------------------------------------- pure checks
def test_memory_estimate_rejects_only_what_does_not_fit():
    cfg = parse_run_config({"embedding-dim": 64, "devices-per-client": 1000})
    fed = SimpleNamespace(n_items=1000, n_devices=1000)
    need = checks.table_bytes(1000, 1000, 64, 1)
    assert need == 4 * 2 * 64 * (1000 * (2 + 3) + 1000)
    checks.check_memory(FedMF, cfg, fed, available=need)
    with pytest.raises(ConfigError) as err:
        checks.check_memory(FedMF, cfg, fed, available=need - 1)
    assert str(err.value).endswith("pass --set embedding-dim=63 or less, or fewer devices "
                                   "(max-devices)")
    checks.check_memory(C3DRecPush, cfg, fed, available=1)   # C3DRec sizes are c3drec-* keys


def test_output_dir_probe_leaves_nothing(tmp_path):
    checks.check_output_dir(tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []
