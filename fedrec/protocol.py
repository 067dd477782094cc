"""The device-cloud contract: what one simulated device receives and returns.

Both halves of a protocol speak it: the cloud half (``strategies``) builds tasks and reads
replies, the device half (``clients``) turns a task into a reply. It depends on neither.

Phase kinds: a task's ``kind`` names the phase of the round it belongs to (``fit``,
``evaluate``, or a protocol's own, e.g. C3DRec push's ``serve``); ``end`` tells a host the
run is over. Determinism: a device's randomness comes only from ``task.rng``
(``device_rng``: seeded by run seed, round, device id and phase), never from global RNGs or
the host it runs on.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: named arrays, the unit of every download, upload and private state
Arrays = dict[str, np.ndarray]

FIT = "fit"
EVALUATE = "evaluate"
END = "end"        # the run is over: hosts drop their devices' private state


def device_rng(seed: int, rnd: int, device_id: int, kind: str) -> np.random.Generator:
    """The one RNG of a device in a phase: a function of (seed, round, device, phase name)."""
    stream = {FIT: 0, EVALUATE: 1}.get(kind, zlib.crc32(kind.encode()) + 2)
    return np.random.default_rng([seed, rnd, device_id, stream])


@dataclass
class DeviceTask:
    """Everything a device gets for one phase of a round.

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
    status: "ok", "dropped" (unavailable this round), "failed" (error holds the reason) or
    "late" (a straggler past ``deadline-s``: its upload is discarded).
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
