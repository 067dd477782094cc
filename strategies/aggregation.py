"""Aggregation math over device uploads: pure numpy, float64 accumulation, no Flower objects.

Deltas are summed in float64 in the order given (callers sort by device id), so the result
does not depend on which Flower client carried which device. The sums themselves
(``sparse_row_sums``) and the host reduction of a cohort's uploads are ``fedrec.reduce``,
shared with the device hosts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from flwr.server.strategy.aggregate import aggregate as flwr_weighted_average

from fedrec.payload import SparseRows
from fedrec.reduce import sparse_row_sums

__all__ = ["SumsRule", "apply_delta", "client_mean_of_sums", "row_mean_of_sums",
           "sparse_client_mean", "sparse_row_mean", "sparse_row_sums", "weighted_mean"]


def sparse_row_mean(n_rows: int, updates: list[SparseRows]) -> np.ndarray:
    """FedMF rule: each row's delta averaged over the devices that touched it. float64 [n_rows, D]."""
    sums, counts = sparse_row_sums(n_rows, updates)
    return row_mean_of_sums(sums, counts, len(updates))


def sparse_client_mean(n_rows: int, updates: list[SparseRows]) -> np.ndarray:
    """FedAvg over participants with untouched rows counted as zero deltas. float64 [n_rows, D]."""
    sums, counts = sparse_row_sums(n_rows, updates)
    return client_mean_of_sums(sums, counts, len(updates))


def row_mean_of_sums(sums: np.ndarray, counts: np.ndarray, n_devices: int) -> np.ndarray:
    """``sparse_row_mean`` from totals. float64 [n_rows, D]."""
    return sums / np.maximum(counts, 1)[:, None]


def client_mean_of_sums(sums: np.ndarray, counts: np.ndarray, n_devices: int) -> np.ndarray:
    """``sparse_client_mean`` from totals. float64 [n_rows, D]."""
    return sums / max(n_devices, 1)


SumsRule = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def weighted_mean(deltas: list[np.ndarray], weights: list[int]) -> np.ndarray:
    """Example-weighted mean of dense deltas in float64 (Flower's ``aggregate``)."""
    results = [([d.astype(np.float64)], int(w)) for d, w in zip(deltas, weights, strict=True)]
    return flwr_weighted_average(results)[0]


def apply_delta(param: np.ndarray, delta: np.ndarray, server_lr: float) -> np.ndarray:
    """param + server_lr * delta, computed in float64, stored in the param's dtype."""
    return (param.astype(np.float64) + server_lr * delta).astype(param.dtype)
