"""Checks of a run before anything starts: each failure is one ConfigError line naming the
problem and the fix (experiments.run prints it and exits 2).

Nothing here trains a model or writes a file (``check_output_dir`` creates and removes one
probe file). ``experiments.setup`` runs the strategy checks when it parses a config;
``experiments.run.validate`` runs the others once the data is prepared, before the device
logic allocates its model.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fedrec.config import RunConfig
from fedrec.errors import ConfigError
from fedrec.threat_config import SWITCHES, ThreatConfig
from strategies.base import DeviceStrategy
from strategies.registry import OPTION_PREFIXES, shared_model_names
from strategies.shared_model import SharedModelStrategy

#: copies of the item tables held at once: the cloud (model, aggregate) and each Flower client
#: working in parallel (model, broadcast, update)
CLOUD_COPIES, CLIENT_COPIES = 2, 3
#: float32 per item and per device: at most two tables of embedding-dim (NeuMF; MF: dim + 1)
TABLES = 2


def check_num_supernodes(n: int) -> None:
    """``--num-supernodes``: 0 = one Flower client per shard of devices, else at least 1."""
    if n < 0:
        raise ConfigError(f"--num-supernodes {n} is negative; pass a number >= 1, or leave it "
                          "out for one Flower client per devices-per-client devices")


def check_threats(cls: type[DeviceStrategy], threat: ThreatConfig, strategy: str) -> None:
    """Attacks craft, and defences screen, device updates of a shared model's tables: both
    need a SharedModelStrategy (C3DRec's cloud model is pre-trained; devices send no updates)."""
    if issubclass(cls, SharedModelStrategy):
        return
    for key, kind in (("attack", threat.attack.kind), ("defence", threat.defence.kind)):
        if kind != "none":
            raise ConfigError(f"{key}={kind} needs devices that send updates of a shared model, "
                              f"which {strategy} does not have; use strategy="
                              f"{' | '.join(shared_model_names())}, or {key}=none")


def check_output_dir(output_dir: Path) -> None:
    """The nearest existing folder of ``output_dir`` must take a new file (probed, removed)."""
    existing = output_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fix = "pass --set output-dir=<a folder you can write>"
    if not existing.is_dir():
        raise ConfigError(f"output-dir {output_dir} cannot be created: {existing} is a file; {fix}")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".fedrec-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(f"output-dir {output_dir} cannot be written: a file cannot be created "
                          f"in {existing} ({exc.strerror or exc}); {fix}") from None


def table_bytes(n_items: int, n_devices: int, dim: int, workers: int) -> int:
    """Rough peak bytes of a shared-model run's item tables (all copies) and user rows."""
    rows = n_items * (CLOUD_COPIES + CLIENT_COPIES * workers) + n_devices
    return 4 * TABLES * dim * rows


def available_memory() -> int | None:
    """Bytes of memory available now (MemAvailable of /proc/meminfo), None when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(cls: type[DeviceStrategy], cfg: RunConfig, fed: Any,
                 available: int | None = None) -> None:
    """Reject an embedding-dim whose item tables cannot fit in memory, before any is allocated."""
    if not issubclass(cls, SharedModelStrategy):
        return   # only these build n_items x embedding-dim tables (C3DRec: c3drec-* sizes)
    have = available_memory() if available is None else available
    n_items, n_devices, dim = int(fed.n_items), int(fed.n_devices), cfg.train.embedding_dim
    workers = min(math.ceil(n_devices / cfg.sim.devices_per_client), os.cpu_count() or 1)
    need = table_bytes(n_items, n_devices, dim, workers)
    if have is None or need <= have:
        return
    fits = max(1, have // table_bytes(n_items, n_devices, 1, workers))
    raise ConfigError(f"embedding-dim={dim} needs about {need / 2**30:,.1f} GiB for the item "
                      f"tables of {n_items:,} items on the cloud and {workers} Flower client(s), "
                      f"more than the {have / 2**30:,.1f} GiB available; pass --set "
                      f"embedding-dim={fits} or less, or fewer devices (max-devices)")


def ignored_options(cls: type[DeviceStrategy], flat: Mapping[str, Any],
                    given: Iterable[str]) -> list[str]:
    """Warning lines for given keys this run ignores: another strategy's options
    (``c3drec-*`` with fedmf) and threat options whose switch is ``none``."""
    by_strategy = sorted(k for k in given for prefix in OPTION_PREFIXES
                         if k.startswith(prefix) and prefix != cls.prefix)
    lines = [_ignored(by_strategy, f"by strategy {flat.get('strategy')}")] if by_strategy else []
    for switch in SWITCHES:
        keys = sorted(k for k in given if k.startswith(f"{switch}-"))
        if keys and str(flat.get(switch, "none")) == "none":
            lines.append(_ignored(keys, f"while {switch}=none"))
    return lines


def _ignored(keys: list[str], why: str) -> str:
    verb = "is" if len(keys) == 1 else "are"
    return f"warning: {', '.join(keys)} {verb} ignored {why}"
