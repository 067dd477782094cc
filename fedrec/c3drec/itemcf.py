"""Item-CF filtering model of C3DRec (Sec. 3.2): candidate sets from the transactional matrix.

With ``x`` the binary users x items matrix of purchases (``x[k, m] = 1`` if user k bought,
carted or favoured item m) and ``i_m`` its m-th column,

    sim(i_m, i_b) = i_m . i_b / (|i_m| |i_b|)                     (cosine; 0 for an empty column)
    p[k, m]       = sum_b sim(i_m, i_b) x[k, b] / sum_b |sim(i_m, i_b)|   (0 where the sum is 0)

The sums run over every item b, the item itself included (as the paper writes them).
A user's candidate set is ``{m : p[k, m] > p_candidate}`` (threshold rule) or the
``ceil(proportion * n_items)`` items with the largest ``p[k, m]`` (top-proportion rule, the
paper's 10% default). Ties are broken by the item's purchase count (more first), then by
the lower item id, so users without purchases get the most purchased items.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from fedrec.errors import ConfigError


def binary_matrix(users: np.ndarray, items: np.ndarray, n_users: int,
                  n_items: int) -> sp.csr_matrix:
    """Binary csr [n_users, n_items] with a 1 at every (user, item) pair (duplicates once)."""
    m = sp.csr_matrix((np.ones(len(users)), (np.asarray(users), np.asarray(items))),
                      shape=(n_users, n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def item_similarity(x: sp.spmatrix) -> sp.csr_matrix:
    """Cosine similarity of the item columns of ``x`` [K, M] -> csr float64 [M, M] (symmetric)."""
    xc = sp.csc_matrix(x, dtype=np.float64)
    norms = np.sqrt(np.asarray(xc.multiply(xc).sum(axis=0)).ravel())  # [M]
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    xn = xc @ sp.diags(inv)                                          # unit columns [K, M]
    return sp.csr_matrix(xn.T @ xn)


def knn(sim: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row of ``sim`` (ties: lower column id); 0 = all."""
    if k <= 0:
        return sim
    s = sp.csr_matrix(sim, copy=True)
    for r in range(s.shape[0]):
        lo, hi = s.indptr[r], s.indptr[r + 1]
        if hi - lo > k:
            vals, cols = s.data[lo:hi], s.indices[lo:hi]
            order = np.lexsort((cols, -vals))               # value desc, column asc
            s.data[lo:hi][order[k:]] = 0.0
    s.eliminate_zeros()
    return s


def cf_scores(x: sp.spmatrix, sim: sp.spmatrix) -> np.ndarray:
    """``p[k, m]`` of the module docstring for the rows of ``x`` -> float64 [K, M]."""
    denom = np.asarray(abs(sim).sum(axis=1)).ravel()                 # [M]
    num = np.asarray((sp.csr_matrix(x, dtype=np.float64) @ sp.csr_matrix(sim).T).todense())
    return np.divide(num, denom[None, :], out=np.zeros_like(num), where=denom[None, :] > 0)


def candidate_count(n_items: int, proportion: float) -> int:
    """Size of a top-proportion candidate set: ``ceil(proportion * n_items)``, at least 1."""
    if not 0.0 < proportion <= 1.0:
        raise ConfigError(f"candidate proportion {proportion} must be in (0, 1]; "
                          "the paper uses 0.1")
    return max(1, math.ceil(proportion * n_items - 1e-9))


def candidate_sets(
    x: sp.spmatrix, sim: sp.spmatrix, proportion: float | None = 0.1,
    threshold: float | None = None, chunk: int = 256,
) -> list[np.ndarray]:
    """Candidate items per user (row of ``x``), best first. int64 arrays.

    Exactly one of ``proportion`` (top share of all items) and ``threshold`` (``p > t``)
    is used: ``threshold`` when it is not None. Rows are scored ``chunk`` users at a time,
    so memory stays ``chunk x n_items`` floats.
    """
    x = sp.csr_matrix(x)
    n_users, n_items = x.shape
    count = 0                                                        # top-proportion size
    if threshold is None:
        if proportion is None:
            raise ConfigError("candidate sets need a proportion or a threshold; set "
                              "c3drec-candidate-proportion or c3drec-candidate-threshold")
        count = candidate_count(n_items, proportion)
    popularity = np.asarray(x.sum(axis=0)).ravel()                   # [M] purchases per item
    ids = np.arange(n_items)
    out: list[np.ndarray] = []
    for lo in range(0, n_users, chunk):
        p = cf_scores(x[lo:lo + chunk], sim)                         # [B, M]
        for row in p:
            order = np.lexsort((ids, -popularity, -row))              # p desc, pop desc, id asc
            if threshold is not None:
                out.append(order[row[order] > threshold].astype(np.int64))
            else:
                out.append(order[:count].astype(np.int64))
    return out
