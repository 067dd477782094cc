"""Simulation on a Ray cluster that is already running, instead of one Ray per run.

Flower 1.41 calls ``ray.init()`` with no address (flwr ``RayBackend.init_ray``), so Ray's own
``RAY_ADDRESS`` in the environment of the process that starts the simulation decides: set it
and ``experiments.run`` (both simulation engines) attaches to that cluster. The run config
must then not carry ``init-args-num-cpus``/``-gpus`` (a driver that joins a cluster may not
size it); ours never does. Before anything starts, the launcher checks that the cluster
answers and has a CPU for a Flower client (``check_cluster``), so a wrong address or an
empty cluster is one line instead of a simulation that waits.

Every node of the cluster needs the same environment: this package installed
(``pip install -e .`` at the same path) and, because any actor may host any device shard in
simulation, ``FEDREC_STATE_DIR`` set to a folder all nodes share when ``ray start`` runs on
them (docs/deployment.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from experiments.deployment import DeploymentError, check_reachable

#: how long the probe may take to connect a Ray driver and read the cluster's resources (s)
PROBE_TIMEOUT_S = 60.0


def ray_address() -> str | None:
    """``$RAY_ADDRESS`` when set (Ray's own variable), else None: a fresh local Ray per run."""
    return os.environ.get("RAY_ADDRESS") or None


PROBE = """
import json, ray
ray.init(address={address!r}, include_dashboard=False, logging_level="ERROR",
         log_to_driver=False)
print(json.dumps({{"resources": ray.cluster_resources(), "nodes": len(ray.nodes())}}))
ray.shutdown()
"""


def cluster_resources(address: str, timeout_s: float | None = None) -> dict:
    """``{"resources": {...}, "nodes": n}`` of the cluster, read by a short-lived driver."""
    timeout_s = PROBE_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        out = subprocess.run([sys.executable, "-c", PROBE.format(address=address)],
                             capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise DeploymentError(f"the Ray cluster at RAY_ADDRESS={address} did not answer within "
                              f"{timeout_s:.0f} s; check the address (ray status) or unset "
                              "RAY_ADDRESS for a local Ray") from None
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeploymentError(f"cannot join the Ray cluster at RAY_ADDRESS={address} ({last}); "
                              "check the address (ray status) or unset RAY_ADDRESS")
    return json.loads(lines[-1])


def check_cluster(address: str, cpus_per_client: float = 1.0) -> dict:
    """DeploymentError (one line) unless the cluster answers and can host one Flower client."""
    if ":" in address and not address.startswith(("ray://", "auto")):
        check_reachable(address, what="Ray cluster", flag="RAY_ADDRESS",
                        fix="start one (ray start --head) or unset RAY_ADDRESS for a local Ray")
    info = cluster_resources(address)
    cpus = float(info["resources"].get("CPU", 0.0))
    if cpus < cpus_per_client:
        raise DeploymentError(
            f"the Ray cluster at RAY_ADDRESS={address} has {cpus:g} CPU(s) on {info['nodes']} "
            f"node(s); each Flower client needs {cpus_per_client:g}: add a node (ray start "
            f"--address {address} --num-cpus 2) or unset RAY_ADDRESS")
    return info
