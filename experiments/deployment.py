"""Flower's Deployment Engine on this machine: a real ``flower-superlink`` (no simulation),
N ``flower-supernode`` processes on loopback, and ``flwr run`` of the app against them.

SuperNode i gets the node config ``partition-id=i num-partitions=N state-dir=...``: the
cloud orders its clients by partition-id (``strategies.driver.partition_order``) and routes
the i-th contiguous block of device shards to node i every round, so each node keeps its
devices' private state in its own ``state-dir`` (``<state root>/node-<i>``; kept after a
kill so ``--resume`` finds it, deleted by the run's ``end`` message).

What we found with flwr 1.41 (see docs/deployment.md for measurements):

* A SuperNode polls the SuperLink every 3 s while idle and starts a fresh
  ``flwr-clientapp`` process for every message (``--isolation subprocess``): each phase of
  a round costs a process start, the app's imports and its data preparation on every node.
  Cohorts per node keep the number of messages at one per node and phase.
* A SuperNode logs ``SuperNode ID: <id>`` once it has registered; we wait for that line
  (bounded, ``--node-wait``) before ``flwr run``, so a node that cannot reach the SuperLink
  is reported in one line instead of a ServerApp that waits for clients.
* ``--max-wait-time`` makes a SuperNode give up (and exit) when the SuperLink goes away,
  instead of retrying forever.
* Each SuperNode gets its own ``FLWR_HOME`` (its ClientApp processes install the FAB there;
  two nodes installing into one folder at once would race).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.state import default_state_root
from experiments import procs
from experiments.flower_engine import (
    CONNECTION,
    _interrupted,
    flower_env,
    free_port,
    stage,
    start_superlink,
    stop_superlink,
    write_connection,
)
from fedrec.errors import FedrecError

#: the line a SuperNode logs once the SuperLink has accepted it (flwr 1.41)
REGISTERED = "SuperNode ID:"
#: how long a SuperNode keeps trying to reach a SuperLink that went away (s)
NODE_MAX_WAIT_S = 30
#: default bound on the wait for every SuperNode to register (s); ``--node-wait``
NODE_WAIT_S = 60.0
#: how long ``--superlink`` may take to accept a TCP connection (s)
SUPERLINK_WAIT_S = 10.0


class DeploymentError(FedrecError):
    """The federation could not be brought up; the message is one line with the fix."""


@dataclass
class Node:
    partition: int
    proc: subprocess.Popen
    log: Path


def node_config(partition: int, n_nodes: int, state_dir: Path) -> str:
    """``--node-config`` of SuperNode ``partition`` (TOML values, the path quoted)."""
    return (f"partition-id={partition} num-partitions={n_nodes} "
            f"state-dir={json.dumps(str(state_dir))}")


def supernode_command(superlink: str, partition: int, n_nodes: int, state_dir: Path,
                      io_port: int) -> list[str]:
    return [str(Path(sys.executable).parent / "flower-supernode"), "--insecure",
            "--superlink", superlink, "--isolation", "subprocess",
            "--host", "127.0.0.1", "--port", str(io_port),
            "--max-wait-time", str(NODE_MAX_WAIT_S),
            "--node-config", node_config(partition, n_nodes, state_dir)]


def node_state_dir(partition: int) -> Path:
    """Where SuperNode ``partition`` keeps its devices' state: stable across launches, so a
    resumed run's node i finds what node i wrote."""
    return default_state_root() / f"node-{partition}"


def start_nodes(superlink: str, n_nodes: int, run_dir: Path, home: Path) -> list[Node]:
    nodes = []
    for i in range(n_nodes):
        node_home = home / f"node-{i}"
        (node_home / "cwd").mkdir(parents=True, exist_ok=True)
        log = run_dir / f"supernode-{i}.log"
        with log.open("w") as fh:
            proc = subprocess.Popen(
                supernode_command(superlink, i, n_nodes, node_state_dir(i), free_port()),
                cwd=node_home / "cwd", env=flower_env(node_home), stdout=fh,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        nodes.append(Node(i, proc, log))
    return nodes


def registered(log: Path) -> bool:
    try:
        return REGISTERED in log.read_text(errors="replace")
    except OSError:
        return False


def wait_registered(nodes: list[Node], superlink: str, timeout_s: float) -> None:
    """Return once every node has registered; DeploymentError (one line) when one exits or
    the bound passes."""
    deadline = time.monotonic() + timeout_s
    waiting = list(nodes)
    while waiting:
        for node in list(waiting):
            if registered(node.log):
                waiting.remove(node)
            elif node.proc.poll() is not None:
                raise DeploymentError(
                    f"SuperNode {node.partition} exited with {node.proc.returncode} before it "
                    f"registered with the SuperLink at {superlink}; see {node.log}")
        if waiting and time.monotonic() > deadline:
            names = ", ".join(str(n.partition) for n in waiting[:5])
            raise DeploymentError(
                f"{len(waiting)} of {len(nodes)} SuperNode(s) ({names}) did not register with "
                f"the SuperLink at {superlink} within {timeout_s:.0f} s; see "
                f"{waiting[0].log}. Check the address, or raise --node-wait on a loaded machine")
        time.sleep(0.2)


def stop_nodes(nodes: list[Node], grace_s: float = 10.0) -> None:
    """SIGTERM to every node's process groups (the node and its ClientApp processes), SIGKILL
    after ``grace_s``."""
    groups: set[int] = set()
    for node in nodes:
        groups |= procs.process_groups(node.proc.pid)
    procs.stop({n.proc.pid for n in nodes}, groups, grace_s)
    for node in nodes:
        node.proc.wait()


def flwr_run_command(home: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "flwr"), "run", str(home / "app"), CONNECTION,
            "--stream", "--run-config", str(home / "run_config.toml")]


def check_reachable(address: str, timeout_s: float | None = None, what: str = "SuperLink",
                    flag: str = "--superlink",
                    fix: str = "start one there (flower-superlink) or fix --superlink") -> None:
    """A TCP connection to ``host:port`` within ``timeout_s`` (default SUPERLINK_WAIT_S),
    else DeploymentError naming ``what`` is missing and the ``fix``."""
    timeout_s = SUPERLINK_WAIT_S if timeout_s is None else timeout_s
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DeploymentError(f"{flag} {address!r} is not host:port; write e.g. "
                              f"{flag} 10.0.0.5:9093")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise DeploymentError(f"no {what} answers at {address} "
                                      f"({exc.strerror or exc}) after {timeout_s:.0f} s; {fix}"
                                      ) from None
            time.sleep(0.5)


#: what ``flwr run`` prints once the SuperLink accepted the run (flwr 1.41)
STARTED_RUN = re.compile(r"Successfully started run (\d+)")


def started_run_id(line: str) -> str | None:
    """The run id in a line of ``flwr run``'s output, if it announces one."""
    m = STARTED_RUN.search(line)
    return m.group(1) if m else None


def stream_run(home: Path) -> None:
    """``flwr run`` with its output passed through; on Ctrl-C/SIGTERM the run it started on
    the SuperLink is stopped too (``flwr stop``), since stopping the stream alone would leave
    the run going on a SuperLink we do not own."""
    env = {**flower_env(home), "PYTHONUNBUFFERED": "1"}  # else its lines come at the end
    proc = subprocess.Popen(flwr_run_command(home), cwd=home / "cwd", env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_id = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            run_id = run_id or started_run_id(line)
        proc.wait()
    except KeyboardInterrupt:
        if run_id:
            subprocess.run([str(Path(sys.executable).parent / "flwr"), "stop", run_id, CONNECTION],
                           cwd=home / "cwd", env=flower_env(home), check=False, timeout=60,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc.terminate()
        proc.wait()
        raise


def run_external(overrides: Mapping[str, Any], n_supernodes: int, run_dir: Path, home: Path,
                 address: str, root_certificates: Path | None = None) -> None:
    """The run on a SuperLink someone else started, with their SuperNodes (docs/deployment.md).
    The ServerApp runs next to that SuperLink and writes the run directory there: run the
    launcher on that machine, or give an ``output-dir`` both machines see."""
    stage(overrides, run_dir, home)
    write_connection(home, address, root_certificates)
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        stream_run(home)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_deployment(overrides: Mapping[str, Any], n_supernodes: int, run_dir: Path, home: Path,
                   node_wait_s: float = NODE_WAIT_S) -> None:
    """The run on a local SuperLink + ``n_supernodes`` SuperNodes (see module docstring).
    Raises DeploymentError when the federation does not come up; stops everything it started
    in every case (Ctrl-C and SIGTERM included)."""
    stage(overrides, run_dir, home)
    port = free_port()
    address = f"127.0.0.1:{port}"
    write_connection(home, address)
    previous = signal.signal(signal.SIGTERM, _interrupted)  # so `finally` runs on kill
    link, nodes = None, []
    try:
        link = start_superlink(port, home, run_dir, simulation=False)
        nodes = start_nodes(address, n_supernodes, run_dir, home)
        wait_registered(nodes, address, node_wait_s)
        subprocess.run(flwr_run_command(home), cwd=home / "cwd", env=flower_env(home),
                       check=False)
    finally:
        stop_nodes(nodes)
        if link is not None:
            stop_superlink(link)
        signal.signal(signal.SIGTERM, previous)
