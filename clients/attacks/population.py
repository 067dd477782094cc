"""Who attacks and what for: the malicious devices, the target items, fake profiles.

Pure functions of (seed, device id, sizes, public item popularity); no Flower, no state.
The cloud may call ``malicious_devices`` for reporting detection counts only (ground truth
a real defence does not have); the devices call it to know whether they are the attacker.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedrec.federated import DeviceData

_MALICIOUS_STREAM = 0x4D414C  # "MAL": keeps these draws apart from every other seeded stream
_TARGET_STREAM = 0x544754     # "TGT"
_FAKE_STREAM = 0x46414B       # "FAK"


def n_malicious(n_devices: int, fraction: float) -> int:
    """round(fraction * n), at least 1 when fraction > 0 (0.1% of 1,000 devices is 1 device)."""
    if fraction <= 0:
        return 0
    return min(n_devices, max(1, round(fraction * n_devices)))


def device_key(seed: int, device_id: int) -> float:
    """A uniform number in [0, 1) hashed from (seed, device id) by numpy's SeedSequence."""
    word = np.random.SeedSequence([seed, device_id, _MALICIOUS_STREAM]).generate_state(2, np.uint32)
    return (int(word[0]) * 2**32 + int(word[1])) / 2**64


def malicious_devices(n_devices: int, fraction: float, seed: int) -> np.ndarray:
    """The ``n_malicious`` devices with the smallest keys: sorted int64 [m].

    A device's key depends on (seed, id) only, so the set never depends on rounds, routing
    or hosts, and it grows monotonically with ``fraction`` (1% contains 0.1%).
    """
    m = n_malicious(n_devices, fraction)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    keys = np.array([device_key(seed, d) for d in range(n_devices)])  # [n]
    return np.sort(np.argsort(keys, kind="stable")[:m]).astype(np.int64)


def target_items(popularity: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k unpopular target items: drawn (seeded) from the less popular half of the items
    that occur in training at least once. popularity: int [n_items]; returns sorted int64 [k]."""
    seen = np.flatnonzero(popularity > 0)  # [I+] items with a training interaction
    order = seen[np.argsort(popularity[seen], kind="stable")]  # ascending popularity
    pool = order[: max(k, len(order) // 2)]
    rng = np.random.default_rng([seed, _TARGET_STREAM])
    return np.sort(rng.choice(pool, size=min(k, len(pool)), replace=False)).astype(np.int64)


def popular_items(popularity: np.ndarray, n: int) -> np.ndarray:
    """The n most popular items (ties to the lower id): int64 [n]."""
    return np.argsort(-popularity, kind="stable")[:n].astype(np.int64)


def fake_profile(real: DeviceData, targets: np.ndarray, pool: np.ndarray, filler: int,
                 seed: int) -> DeviceData:
    """A fake user: the targets plus ``filler`` items drawn from ``pool`` (A-ra: all items;
    A-hum: popular ones). filler = 0 takes as many as the real profile (same size on the wire).
    No validation/test item: the attacker is not evaluated."""
    n = filler or max(1, len(np.unique(real.train_items)))
    rng = np.random.default_rng([seed, real.device_id, _FAKE_STREAM])
    pool = np.setdiff1d(pool, targets)
    fill = rng.choice(pool, size=min(n, len(pool)), replace=False)
    items = np.concatenate([targets, fill]).astype(np.int64)
    return DeviceData(real.device_id, items, -1, -1, real.negatives)


class PoisonedData:
    """A federated dataset in which malicious devices hold fake profiles.

    ``device(d)`` returns the fake profile of a malicious device and the real data of every
    other; everything else (sizes, popularity, protocol) is the wrapped dataset's.
    """

    def __init__(self, real: Any, fakes: dict[int, DeviceData]) -> None:
        self.real = real
        self.fakes = fakes

    def device(self, d: int) -> DeviceData:
        return self.fakes[d] if d in self.fakes else self.real.device(d)

    def __getattr__(self, name: str) -> Any:
        if name == "real":  # not yet set (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.real, name)
