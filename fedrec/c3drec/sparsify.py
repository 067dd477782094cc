"""Embedding sparsification (C3DRec Eq. 3) and the sparse encodings that go on the wire.

Eq. 3: an embedding entry survives only if ``|E_i| > gamma`` (hard threshold, the model's
sparse layer, ``fedrec.models.gru4rec.hard_threshold``) and ``lambda * sum_i |E_i|`` is added to
the loss. ``calibrate_gamma`` picks the gamma that reaches a target share of zeros.

Encodings of a float32 tensor viewed as 2-D ``[rows, cols]`` (``cols`` = product of the
trailing dimensions); ``keep`` (default ``x != 0``) says which entries are sent:

=========  ====================================================================  ==========
kind       arrays                                                                bytes
=========  ====================================================================  ==========
dense      ``val`` float32, the tensor as is                                       4 R C
coo        ``shape`` int64, ``idx`` uint32 flat indices, ``val`` float32 [nnz]       8 nnz
csr        ``shape``, ``cnt`` kept per row, ``col`` column ids, ``val`` [nnz]   R b + nnz (b + 4)
bitmap     ``shape``, ``bits`` packed keep-mask (C/8 bytes a row), ``val`` [nnz]  R C / 8 + 4 nnz
=========  ====================================================================  ==========

``cnt``/``col`` use the smallest unsigned type that holds ``cols`` (b = 1, 2 or 4 bytes).
``auto`` picks the smallest. The wire size of a payload is ``fedrec.payload.nbytes``
(``np.save`` framing, ~130 bytes of header per array); ``raw_nbytes`` counts the data only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedrec.errors import ConfigError

KINDS = ("dense", "coo", "csr", "bitmap")
SEP = "~"   # "<tensor name>~<kind>~<field>"; tensor names contain dots, never "~"


def sparsity(x: np.ndarray) -> float:
    """Share of exact zeros (0.0 for an empty array)."""
    x = np.asarray(x)
    return float((x == 0).mean()) if x.size else 0.0


def threshold(x: np.ndarray, gamma: float) -> np.ndarray:
    """Eq. 3's sparse layer in numpy: ``x`` where ``|x| > gamma``, else 0 (a copy)."""
    x = np.asarray(x)
    return np.where(np.abs(x) > gamma, x, np.zeros_like(x)) if gamma > 0 else x.copy()


def calibrate_gamma(values: np.ndarray, target: float) -> float:
    """Smallest gamma with ``share(|v| <= gamma) >= target``: the ``ceil(target * n)``-th
    smallest ``|v|`` (0 when ``target`` is 0 or there are no values)."""
    if not 0.0 <= target < 1.0:
        raise ConfigError(f"embedding sparsity target {target} must be in [0, 1)")
    a = np.sort(np.abs(np.asarray(values, dtype=np.float64)).ravel())
    k = int(np.ceil(target * a.size - 1e-9))
    return float(a[k - 1]) if k > 0 and a.size else 0.0


def _uint_for(n: int) -> type:
    for t in (np.uint8, np.uint16, np.uint32):
        if n <= np.iinfo(t).max:
            return t
    return np.uint64


def encode(x: np.ndarray, kind: str = "auto",
           keep: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Encode ``x`` (float32) keeping the entries where ``keep`` (default ``x != 0``)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if kind == "auto":
        nnz = int(np.count_nonzero(x if keep is None else np.asarray(keep, bool)))
        kind = smallest_kind(x.shape, nnz)
    if kind == "dense":
        return {"val": x}
    if kind not in KINDS:
        raise ConfigError(f"unknown encoding {kind!r}; use one of {', '.join(KINDS)} or auto")
    rows = x.shape[0] if x.ndim else 1
    x2 = x.reshape(rows, -1)                                        # [R, C]
    k2 = (x2 != 0) if keep is None else np.asarray(keep, bool).reshape(x2.shape)
    shape = np.asarray(x.shape, dtype=np.int64)
    val = x2[k2]                                                    # [nnz] row-major
    if kind == "coo":
        return {"shape": shape, "idx": np.flatnonzero(k2).astype(np.uint32), "val": val}
    if kind == "csr":
        t = _uint_for(x2.shape[1])
        return {"shape": shape, "cnt": k2.sum(axis=1).astype(t),
                "col": np.nonzero(k2)[1].astype(t), "val": val}
    return {"shape": shape, "bits": np.packbits(k2, axis=1).ravel(), "val": val}


def _grid(shape: tuple[int, ...]) -> tuple[int, int]:
    """The 2-D view ``[rows, cols]`` the encodings use."""
    rows = shape[0] if shape else 1
    return rows, int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1


def encoded_nbytes(shape: tuple[int, ...], nnz: int, kind: str) -> int:
    """``raw_nbytes(encode(x, kind))`` for a tensor of ``shape`` with ``nnz`` kept entries."""
    rows, cols = _grid(shape)
    head = 8 * len(shape)                                           # the int64 shape array
    if kind == "dense":
        return 4 * rows * cols
    if kind == "coo":
        return head + 8 * nnz
    if kind == "csr":
        b = np.dtype(_uint_for(cols)).itemsize
        return head + b * rows + (b + 4) * nnz
    return head + rows * -(-cols // 8) + 4 * nnz


def smallest_kind(shape: tuple[int, ...], nnz: int) -> str:
    """``auto``'s choice: the smallest encoding (ties: first in KINDS)."""
    return min(KINDS, key=lambda k: encoded_nbytes(shape, nnz, k))


def encode_rows(shape: tuple[int, ...], rows: np.ndarray, values: np.ndarray,
                kind: str = "auto") -> dict[str, np.ndarray]:
    """``encode(x, kind)`` of the tensor ``x`` of ``shape`` that is zero but in the sorted,
    distinct ``rows`` [R], where it holds ``values`` [R, ...]; without building ``x``."""
    n_rows, cols = _grid(shape)
    v2 = np.ascontiguousarray(values, np.float32).reshape(len(rows), cols)  # [R, C]
    k2 = v2 != 0
    if kind == "auto":
        kind = smallest_kind(shape, int(k2.sum()))
    if kind == "dense":
        x = np.zeros((n_rows, cols), np.float32)
        x[rows] = v2
        return {"val": x.reshape(shape)}
    if kind not in KINDS:
        raise ConfigError(f"unknown encoding {kind!r}; use one of {', '.join(KINDS)} or auto")
    head = np.asarray(shape, dtype=np.int64)
    val = v2[k2]
    if kind == "coo":
        flat = np.asarray(rows, np.int64)[:, None] * cols + np.arange(cols)
        return {"shape": head, "idx": flat[k2].astype(np.uint32), "val": val}
    if kind == "csr":
        t = _uint_for(cols)
        cnt: np.ndarray = np.zeros(n_rows, t)
        cnt[rows] = k2.sum(axis=1)
        return {"shape": head, "cnt": cnt, "col": np.nonzero(k2)[1].astype(t), "val": val}
    bits = np.zeros((n_rows, -(-cols // 8)), np.uint8)
    bits[rows] = np.packbits(k2, axis=1)
    return {"shape": head, "bits": bits.ravel(), "val": val}


def decode(arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``encode``: (float32 tensor, bool keep-mask of the same shape)."""
    if "shape" not in arrays:
        x = np.asarray(arrays["val"], dtype=np.float32)
        return x, np.ones(x.shape, dtype=bool)
    shape = tuple(int(s) for s in arrays["shape"])
    rows = shape[0] if shape else 1
    cols = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    keep = np.zeros(rows * cols, dtype=bool)
    if "idx" in arrays:
        keep[arrays["idx"].astype(np.int64)] = True
    elif "col" in arrays:
        row = np.repeat(np.arange(rows), arrays["cnt"].astype(np.int64))
        keep[row * cols + arrays["col"].astype(np.int64)] = True
    else:
        keep = np.unpackbits(arrays["bits"].reshape(rows, -1), axis=1, count=cols).astype(bool)
        keep = keep.ravel()
    x = np.zeros(rows * cols, dtype=np.float32)
    x[keep] = arrays["val"]
    return x.reshape(shape), keep.reshape(shape)


def kind_of(arrays: Mapping[str, np.ndarray]) -> str:
    """Which encoding produced ``arrays``."""
    for field, kind in (("idx", "coo"), ("col", "csr"), ("bits", "bitmap")):
        if field in arrays:
            return kind
    return "dense"


def raw_nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Data bytes of an encoding (no framing)."""
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))


def encode_tensors(tensors: Mapping[str, np.ndarray], kind: str = "auto",
                   keep: Mapping[str, np.ndarray] | None = None,
                   prefix: str = "") -> dict[str, np.ndarray]:
    """Encode several named tensors into one flat payload dict (``prefix + name~kind~field``)."""
    out: dict[str, np.ndarray] = {}
    for name, x in tensors.items():
        out.update(named(name, encode(x, kind, None if keep is None else keep.get(name)), prefix))
    return out


def named(name: str, enc: Mapping[str, np.ndarray], prefix: str = "") -> dict[str, np.ndarray]:
    """One tensor's encoding as payload keys ``prefix + name~kind~field``."""
    k = kind_of(enc)
    return {f"{prefix}{name}{SEP}{k}{SEP}{f}": a for f, a in enc.items()}


def decode_tensors(arrays: Mapping[str, np.ndarray], prefix: str = ""
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Inverse of ``encode_tensors``: (name -> tensor, name -> keep-mask); other keys ignored."""
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, a in arrays.items():
        if key.startswith(prefix) and key.count(SEP) == 2:
            name, _, field = key[len(prefix):].split(SEP)
            groups.setdefault(name, {})[field] = a
    tensors, masks = {}, {}
    for name, enc in groups.items():
        tensors[name], masks[name] = decode(enc)
    return tensors, masks
