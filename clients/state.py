"""Private on-device state that persists across rounds, on disk, keyed by device id.

Devices are grouped in shards of ``shard_size`` consecutive ids, one folder per shard, so a
Flower client that simulates a cohort reads and writes one file per round instead of
thousands. The strategy routes all devices of a shard to the same client in a round, so no
two processes write a shard at once. Writes are atomic (tmp + replace).

Versions make a run resumable: each write is a new file ``shard-<s>/v<version>.pkl`` holding
the whole shard, where ``version = 16 * round + phase index`` (``version_of``). A task of
version v reads the newest file older than v, so a run killed in round r and resumed from
the cloud's checkpoint of round r-1 reads exactly the state that round r saw the first
time; files a killed attempt left from round r (or later) are ignored and replaced. A write
keeps the newest version of the last checkpointed round (``keep_from``) and everything after
it, and deletes older ones: at most a few files per shard.

Where the state lives is the device side's business (``default_state_root``, or a node
config): the cloud only names the run.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import numpy as np

Arrays = dict[str, np.ndarray]
LATEST = 2**62  # a version newer than any real one


#: phases a round may have (a version is 16 * round + phase index)
MAX_PHASES = 16


def version_of(rnd: int, phase_index: int) -> int:
    """The version a phase of a round writes: phases in order, rounds in order."""
    if not 0 <= phase_index < MAX_PHASES:
        raise ValueError(f"phase index {phase_index} outside 0..{MAX_PHASES - 1}")
    return MAX_PHASES * rnd + phase_index


def round_start(rnd: int) -> int:
    """The first version of round ``rnd`` (everything older is from earlier rounds)."""
    return MAX_PHASES * rnd


def default_state_root() -> Path:
    """Where a device host keeps its devices' private state unless its node config says
    otherwise: ``$FEDREC_STATE_DIR``, else ``<temporary folder>/fedrec-device-state``."""
    return Path(os.environ.get("FEDREC_STATE_DIR") or
                Path(tempfile.gettempdir()) / "fedrec-device-state")


class DeviceStateStore:
    def __init__(self, root: str | Path, shard_size: int) -> None:
        self.root = Path(root)
        self.shard_size = shard_size

    def shard_of(self, device_id: int) -> int:
        return device_id // self.shard_size

    def _dir(self, shard: int) -> Path:
        return self.root / f"shard-{shard:06d}"

    def versions(self, shard: int) -> list[int]:
        """Versions on disk for ``shard``, oldest first."""
        folder = self._dir(shard)
        if not folder.is_dir():
            return []
        return sorted(int(p.stem[1:]) for p in folder.glob("v*.pkl"))

    def _read(self, shard: int, before: int) -> dict[int, Arrays]:
        older = [v for v in self.versions(shard) if v < before]
        if not older:
            return {}
        with (self._dir(shard) / f"v{older[-1]:020d}.pkl").open("rb") as fh:
            return pickle.load(fh)

    def load(self, device_ids: list[int], before: int = LATEST) -> dict[int, Arrays | None]:
        """State of each device as of the newest version older than ``before`` (None for a
        device that has none yet)."""
        shards = {s: self._read(s, before) for s in {self.shard_of(d) for d in device_ids}}
        return {d: shards[self.shard_of(d)].get(d) for d in device_ids}

    def save(self, states: dict[int, Arrays], version: int, keep_from: int = -1) -> None:
        """Write the given devices' states as ``version`` of their shards (other devices of
        the shard carry over from the previous version); prune versions older than the
        newest one <= ``keep_from`` and any version newer than ``version``."""
        by_shard: dict[int, dict[int, Arrays]] = {}
        for d, st in states.items():
            by_shard.setdefault(self.shard_of(d), {})[d] = st
        for shard, updates in by_shard.items():
            content = self._read(shard, version)
            content.update(updates)
            self._write(shard, version, content)
            self._prune(shard, version, keep_from)

    def _write(self, shard: int, version: int, content: dict[int, Arrays]) -> None:
        folder = self._dir(shard)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"v{version:020d}.pkl"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            with tmp.open("wb") as fh:
                pickle.dump(content, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # never leave a half-written shard behind
            raise

    def _prune(self, shard: int, version: int, keep_from: int) -> None:
        have = self.versions(shard)
        base = max((v for v in have if v <= keep_from), default=-1)
        for v in have:
            if v < base or v > version:
                (self._dir(shard) / f"v{v:020d}.pkl").unlink(missing_ok=True)
