"""One codec for every message between the cloud and the devices.

A payload is a flat mapping ``name -> np.ndarray`` plus a small JSON-able ``meta`` dict.
It travels as a Flower ``NDArrays`` list whose first element is a uint8 header holding the
names and where each array lies in the fused per-dtype buffers that follow, so a message is
self-describing and needs no side channel in the config dict.

Names are namespaced by owner: ``"*/item_emb"`` is broadcast to every device hosted by a
Flower client, ``"17/rows.idx"`` belongs to device 17. ``SparseRows`` (row indices + values)
is the standard way to send a subset of an embedding table.

Sizes (``nbytes``) are what the arrays cost sent on their own (``flwr``'s ``ndarray_to_bytes``,
i.e. ``np.save``): a device is charged its own arrays, not its share of a fused buffer.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.common import ndarray_to_bytes
from numpy.lib import format as npy_format

BROADCAST = "*"
REDUCED = "+"   # scope of a cohort's summed uploads (fedrec.reduce.reduce_uploads)
HEADER_VERSION = 2


@dataclass(frozen=True)
class SparseRows:
    """A subset of rows of a [n_rows, dim] table: indices int64 [K], values [K, dim]."""

    indices: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        if self.indices.ndim != 1 or self.values.ndim != 2:
            raise ValueError("SparseRows needs indices [K] and values [K, dim]")
        if len(self.indices) != len(self.values):
            raise ValueError(
                f"SparseRows: {len(self.indices)} indices but {len(self.values)} value rows"
            )


def pack(arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> list[np.ndarray]:
    """Encode named arrays + meta as Flower NDArrays: [header(uint8), *buffers].

    Arrays of one dtype travel fused in one flat buffer (first-appearance order of dtypes);
    the header maps each name to (buffer, offset, shape). A cohort's 64 x 4 device arrays
    thus cost 2-3 ``np.save`` calls on the wire instead of 256 (~0.5 ms per device).
    """
    buffers: dict[str, list[np.ndarray]] = {}
    offsets: dict[str, int] = {}
    layout = []
    for a in arrays.values():
        key = a.dtype.str
        parts = buffers.setdefault(key, [])
        layout.append([list(buffers).index(key), offsets.get(key, 0), list(a.shape)])
        parts.append(np.ascontiguousarray(a).reshape(-1))
        offsets[key] = offsets.get(key, 0) + a.size
    header = {"v": HEADER_VERSION, "names": list(arrays), "layout": layout, "meta": meta or {}}
    raw = np.frombuffer(json.dumps(header, separators=(",", ":")).encode(), dtype=np.uint8)
    fused = [p[0] if len(p) == 1 else np.concatenate(p) for p in buffers.values()]
    return [raw.copy(), *fused]


def unpack(ndarrays: list[np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Inverse of ``pack``: every array is a view of its buffer."""
    if not ndarrays:
        raise ValueError("empty payload: expected a header array first")
    header = json.loads(ndarrays[0].tobytes().decode())
    if header.get("v") != HEADER_VERSION:
        raise ValueError(f"payload header version {header.get('v')}, expected {HEADER_VERSION}")
    names, layout, buffers = header["names"], header["layout"], ndarrays[1:]
    if len(names) != len(layout) or len({b for b, _, _ in layout}) != len(buffers):
        raise ValueError(f"payload header names {len(names)} arrays in "
                         f"{len({b for b, _, _ in layout})} buffers, got {len(buffers)}")
    out = {}
    for name, (b, start, shape) in zip(names, layout, strict=True):
        size = int(np.prod(shape, dtype=np.int64))
        out[name] = buffers[b][start:start + size].reshape(shape)
    return out, header["meta"]


def add_sparse(arrays: dict[str, np.ndarray], name: str, rows: SparseRows) -> None:
    """Store ``rows`` under ``name.idx`` / ``name.val``."""
    arrays[f"{name}.idx"] = np.asarray(rows.indices, dtype=np.int64)
    arrays[f"{name}.val"] = rows.values


def get_sparse(arrays: dict[str, np.ndarray], name: str) -> SparseRows:
    """Read rows stored by ``add_sparse``."""
    return SparseRows(arrays[f"{name}.idx"], arrays[f"{name}.val"])


def scoped(owner: int | str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Prefix every name with ``owner/`` (a device id or BROADCAST)."""
    return {f"{owner}/{k}": v for k, v in arrays.items()}


def split_scopes(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Group ``owner/name`` keys by owner: {owner: {name: array}}."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        owner, _, name = key.partition("/")
        out.setdefault(owner, {})[name] = value
    return out


def nbytes(arrays: dict[str, np.ndarray]) -> int:
    """Serialized size in bytes of the arrays, as Flower sends them."""
    return sum(npy_size(a) for a in arrays.values())


def npy_size(a: np.ndarray) -> int:
    """``len(ndarray_to_bytes(a))`` without serializing the data (hosts size every device's
    upload): numpy's own .npy header for a's dtype, shape and order, plus the raw bytes."""
    a = np.asanyarray(a)
    if a.dtype.hasobject:
        return len(ndarray_to_bytes(a))  # not sent by Flower (no pickles): let it raise
    fortran_order = not a.flags.c_contiguous and a.flags.f_contiguous  # np.save's rule
    return _npy_header_size(a.dtype, a.shape, fortran_order) + a.nbytes


@functools.lru_cache(maxsize=8192)
def _npy_header_size(dtype: np.dtype, shape: tuple[int, ...], fortran_order: bool) -> int:
    """Bytes np.save writes before the data: magic, version, padded header dict."""
    fp = io.BytesIO()
    npy_format.write_array_header_1_0(fp, {"descr": npy_format.dtype_to_descr(dtype),
                                           "fortran_order": fortran_order, "shape": shape})
    return fp.tell()


def fingerprint(arrays: dict[str, np.ndarray]) -> int:
    """A 63-bit content hash of a payload (devices cache a decoded model by it)."""
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return int.from_bytes(h.digest(), "little") >> 1
