"""Upload reduction: per-row sums of sparse deltas and a cohort's partial sums (pure numpy).

A Flower client that simulates a cohort may send the cohort's *sums* instead of every
device's upload when the strategy's rule only needs sums (FedMF/FedNCF/PFedRec: per-row
sums and counts, example-weighted sums of dense deltas). This is the simulation equivalent
of secure aggregation: the cloud sees the same totals; each device is still charged the
bytes of its own upload. Both halves use this module: the host reduces its cohort
(``reduce_uploads``, clients.host), the cloud adds the cohorts up (``combine_partials``,
strategies.base) and applies its rule to the totals (strategies.aggregation).

Sums are float64, taken in device-id order within a cohort and cohort order on the server,
so a run is deterministic; against the per-device sum order they differ by float64 rounding
only (far below 1e-6 after the float32 cast).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedrec.payload import SparseRows, get_sparse


def sparse_row_sums(n_rows: int, updates: list[SparseRows]) -> tuple[np.ndarray, np.ndarray]:
    """Per-row sum of deltas and number of contributing devices.

    updates: each SparseRows(indices [K], values [K, D]); returns sums float64 [n_rows, D]
    and counts int64 [n_rows]. Rows nobody touched have sum 0 and count 0.
    """
    dim = updates[0].values.shape[1] if updates else 0
    sums = np.zeros((n_rows, dim), dtype=np.float64)
    counts = np.zeros(n_rows, dtype=np.int64)
    for u in updates:  # one device at a time: no [sum K, D] concatenation
        if has_repeats(u.indices):
            raise ValueError("SparseRows indices must be unique within one device's upload")
        sums[u.indices] += u.values
        counts[u.indices] += 1
    return sums, counts


def has_repeats(indices: np.ndarray) -> bool:
    """Whether an index occurs twice in ``indices`` [K]. O(K) for sorted indices (devices
    upload their rows sorted); np.unique costs ~0.1 ms per upload otherwise."""
    if len(indices) < 2 or bool((indices[1:] > indices[:-1]).all()):
        return False
    return len(np.unique(indices)) != len(indices)


#: spec the strategy sends: sparse table name -> n_rows; dense parameter names
ReduceSpec = dict[str, Any]


def reduce_uploads(uploads: list[dict[str, np.ndarray]], weights: list[int],
                   spec: ReduceSpec) -> dict[str, np.ndarray]:
    """One cohort's partial sums (its devices in device-id order).

    Sparse table ``t`` [n_rows, D]: ``t.rows`` int64 [R] (rows any device touched, sorted),
    ``t.sum`` float64 [R, D], ``t.count`` int64 [R] (devices that sent the row). Dense
    parameter ``p``: ``p.wsum`` float64 = sum_u weights[u] * delta_u. ``n`` int64 [2] =
    (devices, sum of weights).
    """
    out: dict[str, np.ndarray] = {"n": np.array([len(uploads), sum(weights)], dtype=np.int64)}
    if not uploads:  # every device of the cohort dropped out or failed
        return out
    for name, n_rows in spec["sparse"].items():
        sums, counts = sparse_row_sums(int(n_rows), [get_sparse(u, name) for u in uploads])
        rows = np.flatnonzero(counts)
        out[f"{name}.rows"], out[f"{name}.sum"], out[f"{name}.count"] = rows, sums[rows], counts[rows]
    for name in spec["dense"]:
        acc = None
        for u, w in zip(uploads, weights, strict=True):  # Flower's aggregate: sum of w * delta
            term = u[name].astype(np.float64) * w
            acc = term if acc is None else acc + term
        if acc is not None:
            out[f"{name}.wsum"] = acc
    return out


@dataclass
class Totals:
    """Cloud-side totals over all cohorts: per sparse table (sums float64 [n_rows, D], counts
    int64 [n_rows]); per dense parameter sum of w * delta; number of devices; sum of weights."""

    rows: dict[str, tuple[np.ndarray, np.ndarray]]
    dense: dict[str, np.ndarray]
    devices: int
    weight: int


def combine_partials(parts: list[dict[str, np.ndarray]], spec: ReduceSpec) -> Totals:
    """Add up cohorts' ``reduce_uploads`` results (callers order them by device id)."""
    totals = Totals(rows={}, dense={}, devices=0, weight=0)
    for part in parts:
        if int(part["n"][0]) == 0:
            continue
        totals.devices += int(part["n"][0])
        totals.weight += int(part["n"][1])
        for name, n_rows in spec["sparse"].items():
            vals = part[f"{name}.sum"]
            if name not in totals.rows:
                totals.rows[name] = (np.zeros((int(n_rows), vals.shape[1]), dtype=np.float64),
                                     np.zeros(int(n_rows), dtype=np.int64))
            sums, counts = totals.rows[name]
            rows = part[f"{name}.rows"]
            sums[rows] += vals
            counts[rows] += part[f"{name}.count"]
        for name in spec["dense"]:
            if f"{name}.wsum" in part:
                prev = totals.dense.get(name)
                totals.dense[name] = part[f"{name}.wsum"] + (0.0 if prev is None else prev)
    return totals
