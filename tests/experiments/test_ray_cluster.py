"""Simulation attached to a running Ray cluster (RAY_ADDRESS): a head and a second node
started here with ``ray start``, a short job across both, kill -9 and resume on it, and one
line when the cluster is not there or has no CPU for a client."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from experiments import procs
from experiments import ray_cluster as rc
from experiments import run as er
from experiments.flower_engine import free_port
from fedrec.memory import process_table
from fedrec.results import read_summary
from tests.experiments.runs import TINY, comparable, kill_9_after, reference_run, sets

ROUNDS = 4
RAY = str(Path(sys.executable).parent / "ray")




def cluster_pids(temp_dir: str) -> set[int]:
    """Processes of the cluster whose session lives in ``temp_dir`` (ray stop would stop
    every Ray on the machine)."""
    return {p for p in process_table() if temp_dir.encode() in cmdline(p) and procs.alive(p)}


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def actor_parents() -> set[int]:
    """The raylets whose workers are Flower's ClientApp actors right now."""
    table = process_table()
    actors = [p for p in table if cmdline(p).startswith(b"ray::ClientAppActor")]
    parents = {table[p].ppid for p in actors}
    assert all(b"raylet" in cmdline(p) for p in parents), [cmdline(p)[:80] for p in parents]
    return parents


def start_cluster(head_cpus: int, node_cpus: int) -> tuple[str, str]:
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")   # short: Ray's socket paths
    port = free_port()
    env = {**os.environ, "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
    env.pop("RAY_ADDRESS", None)
    subprocess.run([RAY, "start", "--head", "--port", str(port), "--num-cpus", str(head_cpus),
                    "--include-dashboard=false", "--temp-dir", temp_dir, "--disable-usage-stats"],
                   check=True, env=env, capture_output=True)
    if node_cpus:
        subprocess.run([RAY, "start", "--address", f"127.0.0.1:{port}", "--num-cpus",
                        str(node_cpus), "--disable-usage-stats"],
                       check=True, env=env, capture_output=True)
    return f"127.0.0.1:{port}", temp_dir


def stop_cluster(temp_dir: str) -> None:
    """The cluster's processes and their children (Ray's agents rename themselves, so their
    command line no longer names the session)."""
    pids = cluster_pids(temp_dir)
    for pid in list(pids):
        pids |= procs.descendants(pid)
    procs.stop(pids, set(), grace_s=10)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(device_state_root) -> Iterator[str]:
    """A head with 1 CPU and a second node with 1 CPU: Flower's two actors land one on each."""
    address, temp_dir = start_cluster(1, 1)
    try:
        yield address
    finally:
        stop_cluster(temp_dir)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return reference_run(tmp_path_factory.mktemp("ref"), ROUNDS)




@pytest.mark.slow
def test_a_run_on_two_ray_nodes_killed_and_resumed_ends_like_simulation(cluster, reference,
                                                                        tmp_path, monkeypatch):
    info = rc.check_cluster(cluster)
    assert info["nodes"] == 2 and info["resources"]["CPU"] == 2
    run_dir = tmp_path / "r"

    def on_both_nodes(started: set[int]) -> None:   # Flower's two actors, one per raylet
        assert len(actor_parents()) == 2

    kill_9_after(sets(*TINY, f"num-rounds={ROUNDS}", f"output-dir={tmp_path}", "run-name=r"),
                 run_dir, 1, 300, on_both_nodes, env={**os.environ, "RAY_ADDRESS": cluster})
    log_text = (tmp_path / "launcher.log").read_text()
    assert f"simulation on the Ray cluster at RAY_ADDRESS={cluster} (2 nodes, 2 CPUs)" in log_text

    monkeypatch.setenv("RAY_ADDRESS", cluster)
    assert er.main(["--resume", str(run_dir)]) == 0
    assert comparable(run_dir) == comparable(reference)
    assert read_summary(run_dir)["final"] == read_summary(reference)["final"]
    assert rc.check_cluster(cluster)["nodes"] == 2          # the cluster is still there


def test_no_ray_cluster_at_the_address_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rc, "check_reachable", lambda *a, **k: er.check_reachable(
        *a, **{**k, "timeout_s": 1.0}))
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")
    assert er.main([*sets(*TINY, f"output-dir={tmp_path}")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no Ray cluster answers at 127.0.0.1:")
    assert "unset RAY_ADDRESS" in err[0] and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_ray_cluster_without_cpus_is_one_line(tmp_path, monkeypatch, capsys):
    address, temp_dir = start_cluster(0, 0)
    try:
        monkeypatch.setenv("RAY_ADDRESS", address)
        assert er.main([*sets(*TINY, f"output-dir={tmp_path}")]) == 2
    finally:
        stop_cluster(temp_dir)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"the Ray cluster at RAY_ADDRESS={address} has 0 CPU(s)" in err[0]
    assert not list(tmp_path.iterdir())
