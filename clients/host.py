"""``DeviceHost``: one Flower NumPyClient that simulates one device or a cohort of devices.

The strategy sends a packed payload (fedrec.payload) naming the devices this client runs in
this round; the host loads each device's private state, runs the protocol's DeviceLogic,
charges each device its real costs (serialized bytes, FLOPs -> seconds on its hardware
profile, energy) and returns the devices' uploads plus a per-device report. Which Flower
client hosts which device does not change any number: a device's work depends only on
(run seed, round, device id, its data, its state, what it was sent).
"""

from __future__ import annotations

import json
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.client import NumPyClient

from clients.device import DeviceLogic
from clients.state import DeviceStateStore, default_state_root, round_start, version_of
from fedrec import devices as dev
from fedrec.payload import BROADCAST, REDUCED, nbytes, pack, scoped, split_scopes, unpack
from fedrec.protocol import END, FIT, DeviceReply, DeviceTask, device_rng
from fedrec.reduce import ReduceSpec, reduce_uploads

ProfileFn = Callable[[int], dev.DeviceProfile]


@dataclass(frozen=True)
class Faults:
    """Faults injected on purpose (run-config ``fault-unavailable``, ``fault-crash``,
    ``deadline-s``): shares of devices unavailable / crashing after training each round,
    and the simulated seconds a device may take before it counts as a straggler."""

    unavailable: float = 0.0
    crash: float = 0.0
    deadline_s: float = 0.0


class DeviceHost(NumPyClient):
    """Runs the devices named in each message with the given DeviceLogic.

    ``state_root`` is this host's choice of where its devices' private state lives (node
    config ``state-dir``, else ``$FEDREC_STATE_DIR``, else the system's temporary folder:
    clients.state.default_state_root); each run gets ``<state_root>/<run id>/`` and the
    host deletes it when the cloud says the run is over (message kind ``end``).
    """

    def __init__(self, logic: DeviceLogic, profile_of: ProfileFn, seed: int,
                 dropouts: bool = True, faults: Faults = Faults(),
                 state_root: str | Path | None = None, partition: int | None = None) -> None:
        self.logic = logic
        self.partition = partition
        self.profile_of = profile_of
        self.seed = seed
        self.dropouts = dropouts
        self.faults = faults
        self.state_root = Path(state_root) if state_root is not None else default_state_root()

    def get_properties(self, config: dict[str, Any]) -> dict[str, Any]:
        """The node's ``partition-id``: the cloud orders its clients by it (shard routing)."""
        return {} if self.partition is None else {"partition-id": self.partition}

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return []  # the strategy owns the global model; devices never seed it

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]
            ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """Every phase of a protocol arrives here (``meta["kind"]`` names it)."""
        replies, spec = self._run(parameters)
        upload: dict[str, np.ndarray] = {}
        if spec is not None:  # the strategy needs only sums: send the cohort's (device order)
            ok = [r for r in replies if r.status == "ok"]
            upload = scoped(REDUCED, reduce_uploads([r.upload for r in ok],
                                                    [r.num_examples for r in ok], spec))
        else:
            for r in replies:
                upload.update(scoped(r.device_id, r.upload))
        info = {str(r.device_id): reply_info(r) for r in replies}
        return pack(upload, {"devices": info}), sum(r.num_examples for r in replies), {}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]
                 ) -> tuple[float, int, dict[str, Any]]:
        """Flower's evaluate message (Flower's default Server): the reports as JSON."""
        replies, _ = self._run(parameters)
        info = {str(r.device_id): reply_info(r) for r in replies}
        n = sum(1 for r in replies if r.status == "ok")
        return 0.0, n, {"devices": json.dumps(info)}

    def _run(self, parameters: list[np.ndarray]) -> tuple[list[DeviceReply], ReduceSpec | None]:
        """Run the named devices; returns their replies (device order) and the reduce spec."""
        arrays, meta = unpack(parameters)
        kind = str(meta["kind"])
        if kind == END:
            self.end_run(str(meta["run"]), bool(meta.get("keep", False)))
            return [], None
        scopes = split_scopes(arrays)
        broadcast = scopes.pop(BROADCAST, {})
        ids = [int(d) for d in meta["devices"]]
        rnd = int(meta["round"])
        store = DeviceStateStore(self.state_root / str(meta["run"]), int(meta["shard_size"]))
        version = version_of(rnd, int(meta.get("phase_index", 0 if kind == FIT else 1)))
        states = store.load(ids, before=version)
        optional = bool(meta.get("available_only", kind == FIT))
        tasks, dropped = [], []
        for d in ids:
            if optional and not self.takes_part(d, rnd):
                dropped.append(DeviceReply(device_id=d, status="dropped"))
                continue
            tasks.append(DeviceTask(
                device_id=d, rnd=rnd, kind=kind, broadcast=broadcast, own=scopes.get(str(d), {}),
                state=states[d], config=meta.get("config", {}), rng=device_rng(self.seed, rnd, d, kind),
            ))
        replies = self._run_tasks(tasks)
        down_bcast = nbytes(broadcast)
        for task, r in zip(tasks, replies, strict=True):
            r.costs = device_costs(r, self.profile_of(task.device_id),
                                   down_bcast + nbytes(task.own), kind)
            if optional:
                self.inject_failure(r, rnd)
        store.save({r.device_id: r.state for r in replies if r.status == "ok" and r.state is not None},
                   version, keep_from=round_start(rnd) - 1)  # the cloud's last checkpoint
        return sorted(replies + dropped, key=lambda r: r.device_id), meta.get("reduce")

    def end_run(self, run: str, keep: bool) -> None:
        """The run is over: this host's private state of it goes (unless it is to be kept)."""
        if not keep and run and "/" not in run and run not in (".", ".."):
            shutil.rmtree(self.state_root / run, ignore_errors=True)

    def takes_part(self, d: int, rnd: int) -> bool:
        """Available by its profile (when dropouts are simulated) and not made unavailable."""
        if self.dropouts and not dev.is_available(self.profile_of(d), self.seed, rnd, d):
            return False
        return not dev.injected_fault("unavailable", self.faults.unavailable, self.seed, rnd, d)

    def inject_failure(self, r: DeviceReply, rnd: int) -> None:
        """An injected crash after training, or a straggler past the deadline: the device's
        upload and new state are lost, as if it had not taken part (and it is counted)."""
        if r.status != "ok":
            return
        took = r.costs.get("compute_s", 0.0) + r.costs.get("transfer_s", 0.0)
        if dev.injected_fault("crash", self.faults.crash, self.seed, rnd, r.device_id):
            r.status, r.error = "failed", "injected crash after training (fault-crash)"
        elif self.faults.deadline_s and took > self.faults.deadline_s:
            r.status = "late"
            r.error = f"straggler: {took:.3g} simulated s > deadline-s {self.faults.deadline_s:g}"
        else:
            return
        r.upload, r.state, r.num_examples, r.costs = {}, None, 0, {}

    def _run_tasks(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        """Vectorised path first; if it raises, isolate the failing devices one by one."""
        try:
            return self.logic.run_many(tasks)
        except Exception:  # noqa: BLE001 - a device failure must not kill its cohort
            return [self._run_one(t) for t in tasks]

    def _run_one(self, task: DeviceTask) -> DeviceReply:
        try:
            return self.logic.run_many([task])[0]
        except Exception as exc:  # noqa: BLE001
            last = traceback.format_exception_only(exc)[-1].strip()
            return DeviceReply(device_id=task.device_id, status="failed", error=last)


def device_costs(r: DeviceReply, p: dev.DeviceProfile, bytes_down: int, kind: str) -> dict[str, float]:
    """Real payload sizes and simulated time/energy of one device's round."""
    if r.status != "ok":
        return {}
    up = nbytes(r.upload)
    return {
        "bytes_up": float(up),
        "bytes_down": float(bytes_down),
        "flops": float(r.flops),
        "compute_s": dev.compute_time_s(r.flops, p),
        "transfer_s": dev.transfer_time_s(up, bytes_down, p),
        "energy_j": dev.energy_j(r.flops, up, bytes_down, p),
        "peak_mem_bytes": float(r.peak_mem_bytes),
        "mem_ok": float(r.peak_mem_bytes <= p.ram_bytes),
    }


def reply_info(r: DeviceReply) -> dict[str, Any]:
    """The JSON-able part of a reply that goes back in the header/metrics."""
    return {"status": r.status, "error": r.error, "n": r.num_examples,
            "metrics": r.metrics, "costs": r.costs}
