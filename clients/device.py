"""What one simulated device receives, computes and returns, independent of Flower.

A protocol's on-device logic subclasses ``DeviceLogic`` and implements ``fit`` (and usually
``evaluate``) for ONE device. ``DeviceHost`` (clients/host.py) runs it for every device a
Flower client simulates, so the same code serves one-device-per-client and cohort mode.
Determinism: a device's randomness comes only from ``task.rng`` (seeded by run seed, round,
device id and task kind), never from global RNGs or the host it runs on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedrec.config import RunConfig

Arrays = dict[str, np.ndarray]

FIT = "fit"
EVALUATE = "evaluate"


def device_rng(seed: int, rnd: int, device_id: int, kind: str) -> np.random.Generator:
    """The one RNG of a device in a round: a function of (seed, round, device, task kind)."""
    return np.random.default_rng([seed, rnd, device_id, 0 if kind == FIT else 1])


@dataclass
class DeviceTask:
    """Everything a device gets for one round.

    broadcast: arrays every device downloads (e.g. the global item table [n_items, d]).
    own: arrays addressed to this device only (e.g. its candidate set).
    state: the device's private state from its previous round, or None the first time.
    config: scalar settings for this round from the strategy.
    """

    device_id: int
    rnd: int
    kind: str
    broadcast: Arrays
    own: Arrays
    state: Arrays | None
    config: dict[str, Any]
    rng: np.random.Generator


@dataclass
class DeviceReply:
    """What a device returns. ``upload`` travels to the cloud; ``state`` stays on the device.

    metrics: scalar results (loss, hr@10, ...); num_examples: local training examples.
    flops: compute spent (forward + backward); peak_mem_bytes: estimate of the working set.
    status: "ok", "dropped" (unavailable this round) or "failed" (error holds the reason).
    """

    device_id: int
    upload: Arrays = field(default_factory=dict)
    state: Arrays | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    num_examples: int = 0
    flops: float = 0.0
    peak_mem_bytes: float = 0.0
    status: str = "ok"
    error: str = ""
    costs: dict[str, float] = field(default_factory=dict)  # filled by the host


class DeviceLogic(ABC):
    """The on-device half of a protocol. One instance serves many devices of one run.

    Subclasses get the parsed run config and the federated dataset (``fed``), which hands
    each device only its own rows (``fed.device(device_id)``).
    """

    def __init__(self, cfg: RunConfig, fed: Any) -> None:
        self.cfg = cfg
        self.fed = fed

    @abstractmethod
    def fit(self, task: DeviceTask) -> DeviceReply:
        """Local training on the device's own data."""

    def evaluate(self, task: DeviceTask) -> DeviceReply:
        """Local evaluation on the device's held-out data (default: nothing to report)."""
        return DeviceReply(device_id=task.device_id, state=task.state)

    def run_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        """Run a cohort's tasks. Override with a vectorised version where it pays off;
        it must give the same replies as the per-device loop."""
        return [self.fit(t) if t.kind == FIT else self.evaluate(t) for t in tasks]
