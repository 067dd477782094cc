"""Ranking-metric primitives (pure numpy / scipy); ``fedrec.evaluation`` composes them into
the evaluation every protocol runs.

Conventions used throughout
---------------------------
* A *rank* is the 0-based position of a held-out item among its candidates (0 = top).
* **Tie rule (pessimistic).** The rank of the target is the number of *other* candidates whose
  score is not strictly below the target's: ``rank = #{j != t : not (s_j < s_t)}``. Ties count
  against the target, and so does NaN (on either side), so a constant or diverged model gets
  no credit: with C candidates all equal, the target's rank is C - 1.
* Rank metrics (``hit_rate``, ``ndcg``, ``mrr``, ``recall_at_k``, ``user_auc``) return one value
  per user (float64 arrays) so callers can slice by user group (old/new users, attacked/benign);
  ``summarise`` turns a dict of per-user arrays into means.
* ``topk_items`` breaks ties by the lower item id (deterministic, but it does not know which
  item is the target, so Recall@K from top-K lists can exceed HR@K from pessimistic ranks when
  scores tie).

Protocols
---------
* Full ranking: every item is a candidate; the user's training items are excluded (score
  -inf) except the target itself (``full_ranking_ranks``; whole protocols:
  ``fedrec.evaluation``).
* Sampled negatives: candidates are ``[target, negatives...]`` with ``n_neg`` negatives per user
  drawn once with a seeded generator (``sample_negatives``) and reused every round
  (``sampled_ranks``), as in NCF (He et al., WWW 2017; 99 negatives).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias

import numpy as np
import scipy.sparse as sp

from fedrec.errors import ConfigError

Relevant: TypeAlias = "sp.csr_matrix | Sequence[np.ndarray]"


# --------------------------------------------------------------------------- rank metrics
def hit_rate(ranks: np.ndarray, k: int) -> np.ndarray:
    """HR@K per user: 1.0 if the target's 0-based rank is < k, else 0.0. ranks: int [U] -> [U]."""
    return (np.asarray(ranks) < k).astype(np.float64)


def ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    """NDCG@K per user for one relevant item: 1/log2(rank+2) if rank < k else 0. [U] -> [U]."""
    r = np.asarray(ranks, dtype=np.float64)
    return np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)


def mrr(ranks: np.ndarray, k: int) -> np.ndarray:
    """MRR@K per user (reciprocal rank cut at K): 1/(rank+1) if rank < k else 0. [U] -> [U]."""
    r = np.asarray(ranks, dtype=np.float64)
    return np.where(r < k, 1.0 / (r + 1.0), 0.0)


def rank_metrics(ranks: np.ndarray, ks: Iterable[int] = (10, 20)) -> dict[str, np.ndarray]:
    """Per-user ``HR@k``, ``NDCG@k``, ``MRR@k`` for every k in ``ks``."""
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"HR@{k}"] = hit_rate(ranks, k)
        out[f"NDCG@{k}"] = ndcg(ranks, k)
        out[f"MRR@{k}"] = mrr(ranks, k)
    return out


def summarise(per_user: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean of each per-user array, ignoring NaN (users a metric is undefined for).

    A metric that is NaN for every user stays NaN.
    """
    out: dict[str, float] = {}
    for name, values in per_user.items():
        v = np.asarray(values, dtype=np.float64)
        finite = v[~np.isnan(v)]
        out[name] = float(finite.mean()) if finite.size else float("nan")
    return out


def ranks_from_scores(scores: np.ndarray, target_col: int | np.ndarray) -> np.ndarray:
    """Pessimistic 0-based rank of each row's target among its candidates.

    Parameters
    ----------
    scores : float [U, C]
        Candidate scores, higher is better.
    target_col : int or int [U]
        Column of the target in each row.

    Returns
    -------
    int64 [U]
        ``#{j != t : not (scores[u, j] < scores[u, t])}``: ties and NaN count against the target.
    """
    s = np.asarray(scores)
    rows = np.arange(s.shape[0])
    target = s[rows, np.broadcast_to(np.asarray(target_col), rows.shape)]  # [U]
    not_below = ~(s < target[:, None])  # [U, C]; True for >, ==, NaN, and the target itself
    return not_below.sum(axis=1).astype(np.int64) - 1


# --------------------------------------------------------------------------- sparse helpers
def as_csr(relevant: Relevant, n_rows: int, n_cols: int) -> sp.csr_matrix:
    """Binary csr [n_rows, n_cols] from a csr matrix or a list of item-id arrays (one per row).

    Canonical (sorted indices, no duplicates, every stored value 1.0); a list may name items
    beyond ``n_cols`` (the matrix then widens). A sparse input is copied, never modified.
    """
    if sp.issparse(relevant):
        m = sp.csr_matrix(relevant, dtype=np.float64, copy=True)
    else:
        lengths = np.fromiter((len(r) for r in relevant), dtype=np.int64, count=len(relevant))
        cols = np.concatenate([np.asarray(r, dtype=np.int64).ravel() for r in relevant]
                              + [np.empty(0, dtype=np.int64)])
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        n_cols = max(n_cols, int(cols.max()) + 1 if cols.size else 0)
        m = sp.csr_matrix((np.ones(cols.size), cols, indptr), shape=(len(relevant), n_cols))
    if m.shape[0] != n_rows:
        raise ConfigError(f"relevant has {m.shape[0]} rows but there are {n_rows} users; "
                          "pass one row of relevant items per user")
    m.eliminate_zeros()
    m.sum_duplicates()  # also sorts indices: canonical form, needed by _member
    m.data[:] = 1.0
    return m


def _member(rows: np.ndarray, cols: np.ndarray, m: sp.csr_matrix) -> np.ndarray:
    """Whether each (row, col) pair is a stored entry of canonical csr ``m``. Same shape as rows."""
    n_cols = np.int64(max(m.shape[1], int(cols.max()) + 1 if cols.size else 0))
    keys = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr)) * n_cols
    keys += m.indices  # sorted: rows ascending, indices sorted within a canonical row
    query = rows.astype(np.int64) * n_cols + cols
    pos = np.minimum(np.searchsorted(keys, query), max(keys.size - 1, 0))
    return keys[pos] == query if keys.size else np.zeros(query.shape, dtype=bool)


# --------------------------------------------------------------------------- set metrics
def recall_at_k(topk: np.ndarray, relevant: Relevant) -> np.ndarray:
    """Recall@K per user: |top-K ∩ relevant| / |relevant|; NaN for users with no relevant item.

    topk: int [U, K] item ids; relevant: csr [U, n_items] or a list of U item-id arrays.
    """
    topk = np.asarray(topk, dtype=np.int64)
    n_users, k = topk.shape
    rel = as_csr(relevant, n_users, int(topk.max(initial=-1)) + 1)
    rows = np.repeat(np.arange(n_users), k).reshape(n_users, k)
    hits = _member(rows, topk, rel).sum(axis=1)  # [U]
    n_rel = np.diff(rel.indptr).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, hits / n_rel, np.nan)


def auc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """Global AUC = P(pos > neg) + 0.5 P(pos == neg) over all (pos, neg) pairs (Mann-Whitney U)."""
    pos = np.ravel(pos_scores).astype(np.float64)
    neg = np.ravel(neg_scores).astype(np.float64)
    if pos.size == 0 or neg.size == 0:
        raise ConfigError("auc needs at least one positive and one negative score")
    from scipy.stats import rankdata  # here: a 0.8 s import every ClientApp process paid

    r = rankdata(np.concatenate([pos, neg]))  # average ranks: ties count 0.5
    u_stat = r[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u_stat / (pos.size * neg.size))


def user_auc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> np.ndarray:
    """Per-user AUC (ties 0.5). pos: [U] or [U, P], neg: [U, N] -> [U]; mean = macro-AUC."""
    pos = np.asarray(pos_scores, dtype=np.float64)
    pos = pos[:, None] if pos.ndim == 1 else pos  # [U, P]
    neg = np.asarray(neg_scores, dtype=np.float64)[:, None, :]  # [U, 1, N]
    p = pos[:, :, None]  # [U, P, 1]
    return (p > neg).mean(axis=(1, 2)) + 0.5 * (p == neg).mean(axis=(1, 2))


def exposure_per_target(
    topk: np.ndarray, target_items: np.ndarray, interacted: Relevant | None = None
) -> np.ndarray:
    """ER@K of each target item: share of eligible users whose top-K list contains it.

    Definition of the item-promotion attacks the ODRS tutorial (Yin et al., WWW 2024, ch. 5)
    surveys: PipAttack (Zhang et al., WSDM 2022) and PSMU (Yuan et al., SIGIR 2023) report
    ER@K, the fraction of users with the target item in their top-K, averaged over target
    items. Users who already interacted with a target are not eligible for it (they cannot be
    "exposed" to an item recommended away by exclusion); pass ``interacted`` (csr [U, n_items] or
    lists) to apply that, or None to count every user. Returns float [T] (NaN: nobody eligible).
    """
    topk = np.asarray(topk, dtype=np.int64)
    targets = np.asarray(target_items, dtype=np.int64).ravel()
    in_top = (topk[:, :, None] == targets[None, None, :]).any(axis=1)  # [U, T]
    eligible = np.ones_like(in_top)
    if interacted is not None:
        n_cols = max(int(topk.max(initial=-1)), int(targets.max(initial=-1))) + 1
        m = as_csr(interacted, topk.shape[0], n_cols)
        rows = np.repeat(np.arange(topk.shape[0]), targets.size).reshape(in_top.shape)
        eligible = ~_member(rows, np.broadcast_to(targets, in_top.shape), m)
    n_eligible = eligible.sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (in_top & eligible).sum(axis=0) / n_eligible


def exposure_ratio_at_k(
    topk: np.ndarray, target_items: np.ndarray, interacted: Relevant | None = None
) -> float:
    """ER@K: mean over target items of ``exposure_per_target`` (the papers' definition)."""
    return summarise({"er": exposure_per_target(topk, target_items, interacted)})["er"]


def any_target_exposure(topk: np.ndarray, target_items: np.ndarray) -> np.ndarray:
    """Per user: 1.0 if the top-K list holds at least one target item. [U, K] -> [U]."""
    targets = np.asarray(target_items, dtype=np.int64).ravel()
    return np.asarray(np.isin(np.asarray(topk), targets).any(axis=1)).astype(np.float64)


# --------------------------------------------------------------------------- full ranking
def mask_scores(
    scores: np.ndarray, exclude: Relevant | None, keep: np.ndarray | None = None
) -> np.ndarray:
    """Copy of ``scores`` [U, n_items] with the entries named by ``exclude`` set to -inf.

    ``exclude``: csr [U, n_items] (its stored non-zero entries) or a list of U item-id arrays.
    ``keep`` (int [U], optional): one item per row that is never masked (the held-out target).
    The input is not modified; integer scores become float64.
    """
    s = np.array(scores, dtype=np.result_type(np.asarray(scores).dtype, np.float32))
    if exclude is None:
        return s
    ex = sp.csr_matrix(exclude) if sp.issparse(exclude) else as_csr(exclude, s.shape[0], s.shape[1])
    if ex.shape[0] != s.shape[0] or ex.shape[1] > s.shape[1]:
        raise ConfigError(f"exclude has shape {ex.shape} but scores have {s.shape}; "
                          "pass one exclude row per scored user over the same items")
    rows = np.repeat(np.arange(ex.shape[0]), np.diff(ex.indptr))
    nz = ex.data != 0
    if keep is None:
        s[rows[nz], ex.indices[nz]] = -np.inf
        return s
    r = np.arange(s.shape[0])
    kept = s[r, keep].copy()  # [U]
    s[rows[nz], ex.indices[nz]] = -np.inf
    s[r, keep] = kept
    return s


def full_ranking_ranks(
    scores: np.ndarray, targets: np.ndarray, exclude: sp.spmatrix | None = None
) -> np.ndarray:
    """Pessimistic rank of each target among all items, training items excluded.

    scores: float [U, n_items]; targets: int [U]; exclude: csr [U, n_items] (stored entries are
    the user's training items; the target itself is never excluded). Returns int64 [U].
    """
    t = np.asarray(targets, dtype=np.int64)
    return ranks_from_scores(mask_scores(scores, exclude, keep=t), t)


def topk_items(scores: np.ndarray, k: int, exclude: sp.spmatrix | None = None) -> np.ndarray:
    """Item ids of the k highest scores per row, best first. [U, n_items] -> int64 [U, k].

    Excluded entries score -inf, NaN scores are treated as -inf, and ties are broken by the lower
    item id, so the result is a deterministic function of the scores. Uses ``np.argpartition``
    (O(n_items) per row) and sorts only the k selected items.
    """
    s = mask_scores(scores, exclude)
    s[np.isnan(s)] = -np.inf
    n_rows, n_cols = s.shape
    k = min(int(k), n_cols)
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]  # [U, k], any tie order at the boundary
    kth = np.take_along_axis(s, part, axis=1).min(axis=1)[:, None]  # [U, 1] k-th best value
    above = s > kth
    tie = s == kth
    room = k - above.sum(axis=1, keepdims=True)  # [U, 1] slots left for tied items
    chosen = above | (tie & (np.cumsum(tie, axis=1) <= room))  # lowest ids win ties
    cols = np.nonzero(chosen)[1].reshape(n_rows, k)  # ascending ids per row
    order = np.argsort(-np.take_along_axis(s, cols, axis=1), axis=1, kind="stable")
    return np.take_along_axis(cols, order, axis=1)


# --------------------------------------------------------------------------- sampled negatives
def first_occurrence(draws: np.ndarray) -> np.ndarray:
    """True where draws[r, j] does not appear earlier in row r. int [R, W] -> bool [R, W]."""
    order = np.argsort(draws, axis=1, kind="stable")  # equal values keep draw order
    srt = np.take_along_axis(draws, order, axis=1)
    first_sorted = np.ones_like(srt, dtype=bool)
    first_sorted[:, 1:] = srt[:, 1:] != srt[:, :-1]
    first = np.empty_like(first_sorted)
    np.put_along_axis(first, order, first_sorted, axis=1)
    return first


def _random_key_negatives(
    rows: np.ndarray, pos: sp.csr_matrix, n_items: int, n_neg: int, rng: np.random.Generator
) -> np.ndarray:
    """Exact fallback for rows where rejection kept failing: n_neg smallest random keys."""
    keys = rng.random((rows.size, n_items))  # [R, n_items]
    sub = pos[rows]
    keys[np.repeat(np.arange(rows.size), np.diff(sub.indptr)), sub.indices] = np.inf
    return np.argpartition(keys, n_neg - 1, axis=1)[:, :n_neg]


def sample_negatives(
    n_items: int, positives: Relevant, n_neg: int = 99, seed: int = 0, max_rounds: int = 8
) -> np.ndarray:
    """Draw ``n_neg`` distinct non-positive items per user, once, reproducibly.

    Vectorised rejection sampling: every pending user draws a row of candidate ids with
    replacement; draws that are positives of that user or repeats within the row are rejected;
    users with fewer than ``n_neg`` survivors redraw with a row twice as wide (at most
    ``max_rounds`` times, then an exact random-key fallback). Same (seed, positives) -> same
    negatives. Store the result and reuse it every round: the protocol samples once per user.

    Parameters
    ----------
    n_items : int
    positives : csr [U, n_items] or list of U item-id arrays
        Items that must never be drawn for a user (all its interactions, incl. the target).
    n_neg : int
    seed : int

    Returns
    -------
    int64 [U, n_neg]
        Candidates for the sampled protocol are ``[target, negatives...]`` (target in column 0).
    """
    # scipy has no stubs, so issparse narrows nothing: a Sequence has no .shape to mypy
    n_users = positives.shape[0] if sp.issparse(positives) else len(positives)  # type: ignore[union-attr]
    pos = as_csr(positives, n_users, n_items)
    free = n_items - np.diff(pos.indptr)
    if n_users and free.min() < n_neg:
        u = int(np.argmin(free))
        raise ConfigError(f"user row {u} has only {free[u]} non-positive items of {n_items} but "
                          f"n_neg={n_neg}; lower n_neg or filter such users")
    rng = np.random.default_rng(seed)
    out = np.empty((n_users, n_neg), dtype=np.int64)
    todo, width = np.arange(n_users), 2 * n_neg + 16
    for _ in range(max_rounds):
        if todo.size == 0:
            break
        draws = rng.integers(0, n_items, size=(todo.size, width))  # [R, W]
        rows = np.broadcast_to(todo[:, None], draws.shape)
        valid = first_occurrence(draws) & ~_member(rows, draws, pos)
        keep = valid & (np.cumsum(valid, axis=1) <= n_neg)
        done = keep.sum(axis=1) == n_neg
        out[todo[done]] = draws[done][keep[done]].reshape(-1, n_neg)
        todo, width = todo[~done], width * 2
    if todo.size:
        out[todo] = _random_key_negatives(todo, pos, n_items, n_neg, rng)
    return out


def sampled_ranks(pos_scores: np.ndarray, neg_scores: np.ndarray) -> np.ndarray:
    """Pessimistic rank of the target among ``[target, negatives...]``. [U], [U, N] -> int [U]."""
    cand = np.column_stack([np.asarray(pos_scores), np.asarray(neg_scores)])  # [U, 1 + N]
    return ranks_from_scores(cand, 0)
