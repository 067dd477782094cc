"""CoDA's cloud half in pure functions: user vectors, KNN users (Algorithm 1, faiss exact L2),
matched sample sets cut into batches, and the storage the de-duplicated layout saves.

faiss is imported here only (``faiss-cpu``; README): exact ``IndexFlatL2`` search is what
the paper uses (Faiss on PAI), and it is ~10-50x faster than a numpy distance matrix at
100,000 users while bounding memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the matched set of one device: sample ids into the pool, cut into batches
Batches = list[np.ndarray]


def category_vectors(owner: np.ndarray, cat: np.ndarray, n_users: int,
                     n_cats: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's category-visit histogram normalised to sum 1 (the mean one-hot category of
    its events: Algorithm 1's mean feature vector), over the events given.
    -> (users with events int64 [A], vectors float32 [A, C])"""
    users = np.unique(owner)
    counts = np.zeros((len(users), n_cats), np.float64)
    np.add.at(counts, (np.searchsorted(users, owner), cat), 1.0)
    return users, (counts / counts.sum(1, keepdims=True)).astype(np.float32)


def embedding_vectors(owner: np.ndarray, item: np.ndarray, table: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Each user's mean item embedding over the events given (``coda-feature = items``).
    table [I, d] -> (users int64 [A], float32 [A, d])"""
    users, inv = np.unique(owner, return_inverse=True)
    sums = np.zeros((len(users), table.shape[1]), np.float64)
    np.add.at(sums, inv, table[item])
    return users, (sums / np.bincount(inv)[:, None]).astype(np.float32)


def zscore(x: np.ndarray) -> np.ndarray:
    """Columns standardised (a constant column stays 0). float32 [A, C]"""
    sd = x.std(0)
    return ((x - x.mean(0)) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def knn_users(vectors: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest OTHER rows of each row (exact L2, faiss); ties by row order.
    float32 [A, C] -> int64 [A, min(k, A - 1)] row indices"""
    import faiss

    a = len(vectors)
    k = min(k, a - 1)
    if k <= 0:
        return np.zeros((a, 0), np.int64)
    index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, np.float32))
    _, found = index.search(np.ascontiguousarray(vectors, np.float32), k + 1)      # [A, k+1]
    out = np.empty((a, k), np.int64)
    for i in range(a):          # drop the row itself (wherever ties put it), keep k others
        row = found[i][(found[i] != i) & (found[i] >= 0)]
        out[i] = row[:k]
    return out


def random_users(a: int, k: int, seed: int, day: int) -> np.ndarray:
    """``k`` other rows drawn uniformly per row (the ablation). -> int64 [A, min(k, A-1)]"""
    k = min(k, a - 1)
    rng = np.random.default_rng([seed, day, 31])
    out = np.empty((a, max(k, 0)), np.int64)
    for i in range(a):
        pick = rng.choice(a - 1, size=k, replace=False)
        out[i] = pick + (pick >= i)          # skip row i
    return out


def cut_batches(ids: np.ndarray, size: int, size_max: int, max_batches: int) -> Batches:
    """Consecutive batches of ``size``; a last fragment joins the previous batch while that
    stays <= ``size_max`` (the paper's "up to 40 to avoid fragments"); at most
    ``max_batches`` (the daily pull limit)."""
    batches = [ids[i:i + size] for i in range(0, len(ids), size)]
    if len(batches) > 1 and len(batches[-1]) < size and \
            len(batches[-2]) + len(batches[-1]) <= size_max:
        batches[-2:] = [np.concatenate(batches[-2:])]
    return batches[:max_batches]


@dataclass(frozen=True, eq=False)
class RecentIndex:
    """The matched days' pool samples grouped by owner: users int64 [R] sorted, their slices
    ``start``/``stop`` [R] into ``ids`` (pool ids, ascending within each owner)."""

    users: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    ids: np.ndarray


def recent_index(recent: np.ndarray, owner: np.ndarray) -> RecentIndex:
    """Group ``recent`` pool ids (int64 [R], ascending) by their ``owner`` [R]."""
    order = np.argsort(owner, kind="stable")
    users, start, counts = np.unique(owner[order], return_index=True, return_counts=True)
    return RecentIndex(users, start, start + counts, recent[order])


def matched_batches(user: int, neighbours: np.ndarray, recent: RecentIndex,
                    rng: np.random.Generator, size: int, size_max: int,
                    max_batches: int) -> Batches:
    """The neighbours' samples of the matched days (ascending pool ids, then shuffled by
    ``rng``), cut into batches. A user is never its own neighbour."""
    assert user not in set(neighbours.tolist())
    pos = np.searchsorted(recent.users, neighbours[np.isin(neighbours, recent.users)])
    parts = [recent.ids[recent.start[p]:recent.stop[p]] for p in pos.tolist()]
    ids = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    return cut_batches(rng.permutation(ids), size, size_max, max_batches)
