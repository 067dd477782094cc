"""Flower's Deployment Engine (experiments/deployment.py): a real SuperLink and SuperNodes on
loopback, killed with kill -9 and resumed, end with the simulation's numbers; a federation
that cannot come up fails in one line (synthetic "tiny": 30 devices in 4 shards of 8, on 2
SuperNodes; the reference simulation has 4 clients)."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from clients.host import DeviceHost
from experiments import deployment as dep
from experiments import procs
from experiments import run as er
from experiments.flower_engine import free_port
from experiments.resume import resume_engine, write_launch
from fedrec.errors import ConfigError
from fedrec.results import read_summary
from strategies.driver import partition_order
from strategies.messages import route
from tests.experiments.runs import TINY, comparable, kill_9_after, reference_run, sets

ROUNDS = 3




def flower_processes() -> set[int]:
    """Live SuperNode and ClientApp processes on this machine."""
    mine = procs.descendants(1)
    out = set()
    for pid in mine:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if any(name in cmd for name in (b"flower-supernode", b"flwr-clientapp")) \
                and procs.alive(pid):
            out.add(pid)
    return out


# --------------------------------------------------------------------------- routing
@dataclass
class Res:
    properties: dict


class PartProxy:
    def __init__(self, cid: str, part: int | None, fail: bool = False) -> None:
        self.cid, self.part, self.fail = cid, part, fail

    def get_properties(self, ins, timeout, group_id) -> Res:
        if self.fail:
            raise RuntimeError("dead")
        return Res({} if self.part is None else {"partition-id": self.part})


def test_clients_are_ordered_by_partition_not_by_the_ids_they_registered_with():
    proxies = {"900": PartProxy("900", 0), "12": PartProxy("12", 2), "55": PartProxy("55", 1),
               "7": PartProxy("7", None), "3": PartProxy("3", 3, fail=True)}
    assert partition_order(proxies, None, None) == ["900", "55", "12", "3", "7"]


def test_a_node_hosts_one_contiguous_block_of_shards():
    ids = list(range(30))
    slots = route(ids, 4, 3, n_devices=30)          # 8 shards on 3 nodes
    assert slots == {0: list(range(12)), 1: list(range(12, 24)), 2: list(range(24, 30))}
    assert route(ids, 8, 4, n_devices=30) == {i: list(range(8 * i, min(30, 8 * i + 8)))
                                              for i in range(4)}
    assert route([5, 29], 4, 3, n_devices=30) == {0: [5], 2: [29]}   # a sample: same homes


def test_a_device_host_names_its_partition():
    host = DeviceHost(logic=None, profile_of=None, seed=0, partition=3)  # type: ignore[arg-type]
    assert host.get_properties({}) == {"partition-id": 3}
    assert DeviceHost(None, None, 0).get_properties({}) == {}  # type: ignore[arg-type]


# --------------------------------------------------------------------------- bad input
def closed_port() -> int:
    port = free_port()
    with socket.socket() as s:   # nobody listens there once free_port's socket closed
        assert s.connect_ex(("127.0.0.1", port)) != 0
    return port


def test_no_superlink_at_the_address_is_one_line_before_anything_starts(tmp_path, monkeypatch,
                                                                         capsys):
    monkeypatch.setattr(dep, "SUPERLINK_WAIT_S", 1.0)
    port = closed_port()
    args = ["--engine", "deployment", "--superlink", f"127.0.0.1:{port}",
            *sets(*TINY, f"output-dir={tmp_path}", "run-name=x")]
    assert er.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: no SuperLink answers at 127.0.0.1:{port}")
    assert "fix --superlink" in err[0] and not (tmp_path / "x").exists()


@pytest.mark.parametrize("args, says", [
    (["--superlink", "127.0.0.1:1"], "--superlink only apply to --engine deployment"),
    (["--engine", "deployment", "--superlink", "nohost"], "is not host:port"),
    (["--engine", "deployment", "--node-wait", "0"], "--node-wait 0 must be > 0"),
    (["--engine", "deployment", "--root-certificates", "/nonexistent.pem", "--superlink",
      "127.0.0.1:1"], "--root-certificates /nonexistent.pem not found"),
])
def test_deployment_options_that_cannot_work_are_refused(args, says, tmp_path, capsys):
    assert er.main([*args, *sets(*TINY, f"output-dir={tmp_path}")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not list(tmp_path.iterdir())


def test_a_supernode_that_never_registers_is_reported_and_stopped(tmp_path):
    address = f"127.0.0.1:{closed_port()}"
    nodes = dep.start_nodes(address, 2, tmp_path, tmp_path / "home")
    try:
        with pytest.raises(dep.DeploymentError) as info:
            dep.wait_registered(nodes, address, timeout_s=3)
    finally:
        dep.stop_nodes(nodes)
    line = str(info.value)
    assert "\n" not in line and f"did not register with the SuperLink at {address}" in line
    assert "within 3 s" in line and "supernode-0.log" in line
    assert all(n.proc.poll() is not None for n in nodes)


def test_the_run_id_is_read_from_flwr_runs_output():
    assert dep.started_run_id("Successfully started run 3951012887588354344\n") == \
        "3951012887588354344"
    assert dep.started_run_id("Using SuperLink: fedrec-local (127.0.0.1:44095)") is None


def test_a_run_moves_neither_between_engines_nor_between_node_counts(tmp_path):
    write_launch(tmp_path, {}, 30, 4, "deployment")
    assert resume_engine(tmp_path, None, 4, 0) == "deployment"
    with pytest.raises(ConfigError, match="resume it with --engine deployment"):
        resume_engine(tmp_path, "flwr", 4, 0)
    with pytest.raises(ConfigError, match="resume it with --num-supernodes 4"):
        resume_engine(tmp_path, "deployment", 4, 3)
    write_launch(tmp_path, {}, 30, 4, "flwr")
    assert resume_engine(tmp_path, "inprocess", 4, 2) == "inprocess"  # one state folder
    with pytest.raises(ConfigError, match="resume it with --engine flwr"):
        resume_engine(tmp_path, "deployment", 4, 0)


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return reference_run(tmp_path_factory.mktemp("ref"), ROUNDS)


@pytest.mark.slow
def test_kill_9_on_supernodes_and_resume_ends_like_an_undisturbed_run(reference, tmp_path,
                                                                     device_state_root):
    run_dir = tmp_path / "k"
    kill_9_after(["--engine", "deployment", "--num-supernodes", "2",
                  *sets(*TINY, f"num-rounds={ROUNDS}", f"output-dir={tmp_path}", "run-name=k")],
                 run_dir, 1, 300)
    assert read_summary(run_dir)["status"] == "interrupted"
    run_id = (run_dir / "run_id").read_text()
    # each node holds the state of its own block only (4 shards of 8 devices: shards 0-1 on
    # node 0, 2-3 on node 1); a shard whose devices all dropped out of round 1 has none yet
    shards = [(int(p.parent.parent.name.removeprefix("node-")), int(p.name.removeprefix("shard-")))
              for p in device_state_root.glob(f"node-*/{run_id}/shard-*")]
    assert {n for n, _ in shards} == {0, 1} and all(n == s // 2 for n, s in shards), shards
    assert er.main(["--resume", str(run_dir)]) == 0          # the engine it started on
    assert comparable(run_dir) == comparable(reference)     # = the in-process simulation
    assert read_summary(run_dir)["final"] == read_summary(reference)["final"]
    assert json.loads((run_dir / "launch.json").read_text())["engine"] == "deployment"
    logs = sorted(p.name for p in run_dir.glob("supernode-*.log"))
    assert logs == ["supernode-0.log", "supernode-1.log"]
    assert not flower_processes()                            # every node stopped
    assert not list(device_state_root.glob(f"node-*/{run_id}"))   # the run's end cleans up


