"""Private on-device state that persists across rounds, on disk, keyed by device id.

Devices are grouped in shards of ``shard_size`` consecutive ids, one pickle file
per shard, so a Flower client that simulates a cohort reads and writes one file per
round instead of thousands. The strategy routes all devices of a shard to the same client
in a round, so no two processes write a shard at once. Writes are atomic (tmp + replace).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

Arrays = dict[str, np.ndarray]


class DeviceStateStore:
    def __init__(self, root: str | Path, shard_size: int) -> None:
        self.root = Path(root)
        self.shard_size = shard_size

    def shard_of(self, device_id: int) -> int:
        return device_id // self.shard_size

    def _path(self, shard: int) -> Path:
        return self.root / f"shard-{shard:06d}.pkl"

    def _read(self, shard: int) -> dict[int, Arrays]:
        path = self._path(shard)
        if not path.exists():
            return {}
        with path.open("rb") as fh:
            return pickle.load(fh)

    def load(self, device_ids: list[int]) -> dict[int, Arrays | None]:
        """State of each device (None for a device that has none yet)."""
        shards = {s: self._read(s) for s in {self.shard_of(d) for d in device_ids}}
        return {d: shards[self.shard_of(d)].get(d) for d in device_ids}

    def save(self, states: dict[int, Arrays]) -> None:
        """Persist the given devices' states; other devices of the same shards are kept."""
        by_shard: dict[int, dict[int, Arrays]] = {}
        for d, st in states.items():
            by_shard.setdefault(self.shard_of(d), {})[d] = st
        self.root.mkdir(parents=True, exist_ok=True)
        for shard, updates in by_shard.items():
            content = self._read(shard)
            content.update(updates)
            tmp = self._path(shard).with_suffix(f".tmp{os.getpid()}")
            try:
                with tmp.open("wb") as fh:
                    pickle.dump(content, fh, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, self._path(shard))
            except BaseException:
                tmp.unlink(missing_ok=True)  # never leave a half-written shard behind
                raise
