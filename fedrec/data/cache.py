"""Binary cache of parsed datasets, keyed by the content of their source files.

A parsed :class:`~fedrec.data.schema.Dataset` is pickled (protocol 5) under the cache folder
(argument > env ``FEDREC_CACHE`` > ``~/.cache/fedrec``) as ``<name>-<key>.pkl``. The key is a
SHA-256 over the loader's identity, the library versions that shape the pickle, and the SHA-256
of every source file's bytes, so any change to a source file (even one byte, same size and
mtime) selects a new entry. Hashing is cheap next to parsing (~7 ms for the 10 MB ML-1M file).

Each entry is ``MAGIC + sha256(payload) + payload``; a truncated, corrupted or unreadable entry
is ignored (and rebuilt). Entries are written to a temporary file in the same folder, fsynced,
then moved into place with ``os.replace``, so a crash never leaves a half-written entry under
the final name. Old entries are never reused for changed sources; deleting the folder is safe.
Pickle executes code on load: only point the cache at a folder you own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from fedrec.data.schema import Dataset

MAGIC = b"FEDREC-DATASET-1\n"
#: Bump when a loader's output changes for the same input, to retire old entries.
CACHE_VERSION = "1"
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """``$FEDREC_CACHE`` if set, else ``~/.cache/fedrec``."""
    return Path(os.environ.get("FEDREC_CACHE") or Path.home() / ".cache" / "fedrec")


def file_digest(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes (as stored, e.g. still gzipped)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(loader: str, sources: Mapping[str, Path]) -> str:
    """Key of a load: loader identity + library versions + role and content of each source."""
    digest = hashlib.sha256()
    for part in (CACHE_VERSION, loader, pd.__version__, np.__version__):
        digest.update(part.encode() + b"\0")
    for role in sorted(sources):
        digest.update(f"{role}={file_digest(Path(sources[role]))}\0".encode())
    return digest.hexdigest()[:32]


def entry_path(cache_dir: Path, name: str, key: str) -> Path:
    """File of one cache entry; ``name`` is made filename-safe."""
    return Path(cache_dir) / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{key}.pkl"


def read_entry(path: Path) -> Dataset | None:
    """The cached Dataset, or None when the entry is missing, corrupted or not a Dataset."""
    try:
        blob = Path(path).read_bytes()
    except OSError:
        return None
    view = memoryview(blob)  # slices below share memory (no copy of a ~40 MB payload)
    start = len(MAGIC) + 32
    payload = view[start:]
    if view[:len(MAGIC)] != MAGIC or hashlib.sha256(payload).digest() != view[len(MAGIC):start]:
        return None
    try:
        data = pickle.loads(payload)
    except Exception:  # noqa: BLE001 - any unpickling failure means "rebuild"
        return None
    return data if isinstance(data, Dataset) else None


def write_entry(path: Path, data: Dataset) -> None:
    """Write an entry atomically: temporary file in the same folder, fsync, ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = pickle.dumps(data, protocol=5)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(MAGIC + hashlib.sha256(payload).digest())
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_cached(
    name: str, loader: str, sources: Mapping[str, Path], build: Callable[[], Dataset],
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Return the cached parse of ``sources``, or ``build()`` it and cache it.

    Parameters
    ----------
    name: dataset name (prefix of the entry's file name).
    loader: identity of the parse (e.g. ``"preset:ml-1m"``); part of the key.
    sources: role -> file; their bytes are part of the key.
    build: parses the sources (called only on a miss).
    cache_dir: cache folder (default :func:`default_cache_dir`).

    A cache that cannot be written (read-only folder, full disk) only costs a warning.
    ``Dataset.source`` is set to the current paths of ``sources`` (hit or miss alike).
    """
    path = entry_path(Path(cache_dir) if cache_dir else default_cache_dir(), name,
                      cache_key(loader, sources))
    source = tuple(str(p) for p in sources.values())
    cached = read_entry(path)
    if cached is not None:
        return dataclasses.replace(cached, source=source)
    data = dataclasses.replace(build(), source=source)
    try:
        write_entry(path, data)
    except OSError as error:
        warnings.warn(f"fedrec: could not write the dataset cache {path}: {error}", stacklevel=2)
    return data
