"""One evaluation for every protocol: metrics from the scores a device's model gives items.

A protocol's device scores items with the model the protocol evaluates (``DeviceLogic.score``
and ``score_many``, clients/device.py; which model is ``DeviceLogic.scored_model``, one of
``SCORED_MODELS``). The functions here turn those scores into metrics: pure numpy, the same
arithmetic for every protocol, over batched score matrices [devices, candidates] so a cohort
is evaluated in one call. Per-user results are float64 arrays named as ``fedrec.metrics``
names them (``HR@10``); ``metric_key`` gives the reply key (``test_hr@10``).

Ranking (ties and NaN count against the target: ``fedrec.metrics.ranks_from_scores``)
* sampled: candidates ``[target, negatives...]``, target in column 0 -> ``candidate_metrics``;
* full ranking: every item, the user's training items excluded -> ``full_ranking_metrics``
  (Recall@K too, for users with several held-out items); ``evaluate_full_ranking`` runs it
  over many users in chunks;
* top-K lists made where the model lives (C3DRec ranks in the cloud in push mode) ->
  ``ranks_from_topk``; the lists' own tie order applies (lower item id first).
``leave_one_out_metrics`` is the whole leave-one-out protocol of a cohort of devices: it
builds each device's validation and test candidates, asks for their scores and names the
results. The best round is chosen on the validation split (strategies.base).

Labelled impressions (CTR): ``auc`` (global), ``per_user_auc``, ``macro_auc`` (per-user AUC
averaged), ``gauc`` (per-user AUC weighted by impressions), ``logloss``.
Item promotion: ``exposure_at_k`` (ER@K of target items in each user's top-K).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from fedrec.metrics import (
    Relevant,
    as_csr,
    auc,
    mask_scores,
    rank_metrics,
    ranks_from_scores,
    recall_at_k,
    summarise,
    topk_items,
    user_auc,
)

if TYPE_CHECKING:
    from fedrec.federated import DeviceData

__all__ = ["SCORED_MODELS", "SPLITS", "auc", "candidate_metrics", "evaluate_full_ranking",
           "exposure_at_k", "full_ranking_metrics", "gauc", "leave_one_out_metrics", "logloss",
           "macro_auc", "metric_key", "per_user_auc", "ranks_from_topk", "user_auc"]

#: the model a protocol scores: the round's shared model with the device's private parameters
#: ("global"), device-specific copies of shared parameters ("personalised"), or a model from an
#: earlier round, for devices that skipped rounds ("stale")
SCORED_MODELS = ("global", "personalised", "stale")
SPLITS = ("valid", "test")
KS = (10, 20)


def metric_key(split: str, name: str) -> str:
    """The reply key of a per-user metric: ``metric_key("test", "HR@10") == "test_hr@10"``."""
    return f"{split}_{name.lower()}"


# --------------------------------------------------------------------------- ranking
def candidate_metrics(scores: np.ndarray, ks: Sequence[int] = KS) -> dict[str, np.ndarray]:
    """Per-user HR/NDCG/MRR@k of the target (column 0) among its candidates.

    scores: float [U, 1 + N]. A k at or above the number of candidates makes HR@k 1.
    """
    return rank_metrics(ranks_from_scores(scores, 0), ks)


def full_ranking_metrics(
    scores: np.ndarray,
    targets: np.ndarray,
    exclude: Relevant | None = None,
    ks: Sequence[int] = KS,
    relevant: Relevant | None = None,
) -> dict[str, np.ndarray]:
    """Per-user HR/NDCG/MRR@k of each target among all items (+ Recall@k with ``relevant``).

    Parameters
    ----------
    scores : float [U, n_items]
    targets : int [U]
        The held-out item ranked in row u; never excluded.
    exclude : csr [U, n_items] or list of U item-id arrays, optional
        Items scored -inf (the user's training items).
    relevant : csr [U, n_items] or list, optional
        Held-out sets: adds ``Recall@k`` = |top-k ∩ set| / |set| (top-k by ``topk_items``,
        which breaks ties by the lower item id).
    """
    t = np.asarray(targets, dtype=np.int64)
    s = mask_scores(scores, exclude, keep=t)                            # [U, I]
    out = rank_metrics(ranks_from_scores(s, t), ks)
    if relevant is not None:
        top = topk_items(s, max(ks))                                    # [U, K]
        for k in ks:
            out[f"Recall@{k}"] = recall_at_k(top[:, :k], relevant)
    return out


def evaluate_full_ranking(
    score_fn: Callable[[np.ndarray], np.ndarray],
    users: np.ndarray,
    targets: np.ndarray,
    exclude: sp.spmatrix | None,
    ks: Sequence[int] = KS,
    chunk: int = 1024,
    relevant: Relevant | None = None,
) -> dict[str, float]:
    """Full-ranking HR/NDCG/MRR/Recall@K means, scoring ``chunk`` users at a time.

    Parameters
    ----------
    score_fn : users_chunk int [B] -> float [B, n_items]
        Scores of every item for the given users (e.g. ``model.score_all``).
    users, targets : int [U]
        Row i evaluates ``users[i]`` with held-out item ``targets[i]``.
    exclude : csr [U, n_items] or None
        Row i holds the items to exclude for row i (training items); the target is kept.
    relevant : csr [U, n_items] or list, optional
        Held-out sets for Recall@K; default ``{targets[i]}`` (then Recall@K equals HR@K up to
        the tie rules of ``fedrec.metrics``).

    Returns
    -------
    dict
        Means over rows of ``HR@k``, ``NDCG@k``, ``MRR@k``, ``Recall@k`` and ``n_users``.
        Peak memory is about two float [chunk, n_items] arrays.
    """
    users, targets = np.asarray(users), np.asarray(targets, dtype=np.int64)
    ex = None if exclude is None else sp.csr_matrix(exclude)
    rel = None if relevant is None else as_csr(relevant, len(users), 0)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(users), chunk):
        sl = slice(start, start + chunk)
        held = list(targets[sl, None]) if rel is None else rel[sl]
        found = full_ranking_metrics(score_fn(users[sl]), targets[sl],
                                     None if ex is None else ex[sl], ks, held)
        for name, values in found.items():
            parts.setdefault(name, []).append(values)
    out = summarise({name: np.concatenate(v) for name, v in parts.items()})
    out["n_users"] = float(len(users))
    return out


def ranks_from_topk(topk: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Rank of each target from a top-K list: its first position, +inf where it is absent.

    topk: int [E, K] (-1 pads short lists); targets: int [E] -> float64 [E], for
    ``fedrec.metrics.rank_metrics`` at any k (absent never counts).
    """
    match = np.asarray(topk) == np.asarray(targets)[:, None]            # [E, K]
    return np.where(match.any(axis=1), match.argmax(axis=1), np.inf)


# --------------------------------------------------------------------------- leave-one-out
def split_negatives(data: DeviceData, split: str) -> np.ndarray:
    """The negatives a device ranks its ``split`` item against: validation and test draw
    theirs independently (``DeviceData.valid_negatives``, ``negatives``); a device made by
    hand without validation negatives uses the test ones."""
    valid = data.valid_negatives if split == "valid" else None
    negatives = data.negatives if valid is None else valid
    if negatives is None:
        raise ValueError(f"device {data.device_id} has no sampled negatives (full-ranking data)")
    return negatives


def held_out(data: DeviceData, split: str) -> int:
    """The device's ``split`` item, -1 if it has none."""
    return data.valid_item if split == "valid" else data.test_item


def excluded(data: DeviceData, split: str) -> np.ndarray:
    """Items a full ranking masks: the training items, and for the test item the validation item."""
    if split == "test" and data.valid_item >= 0:
        return np.append(data.train_items, data.valid_item)
    return data.train_items


def leave_one_out_metrics(
    data: Sequence[DeviceData],
    score: Callable[[np.ndarray | None], np.ndarray],
    ks: Sequence[int] = KS,
) -> list[dict[str, float]]:
    """Validation and test HR/NDCG/MRR@k of leave-one-out devices, from their scores.

    Parameters
    ----------
    data : each device's own data (-1 = no held-out item); the sampled protocol when it
        holds negatives, full ranking otherwise.
    score : callable
        Sampled: items int [T, 2, 1 + N] (validation then test candidates, target first)
        -> float [T, 2, 1 + N]. Full ranking: None -> float [T, n_items] (every item).
    ks : cut-offs.

    Returns
    -------
    list of dict
        Per device ``{"valid_hr@10": ..., "test_ndcg@20": ...}``; a split without a held-out
        item is left out.
    """
    out: list[dict[str, float]] = [{} for _ in data]
    if not data:
        return out
    targets = np.array([[held_out(d, s) for s in SPLITS] for d in data])  # [T, 2]
    if data[0].negatives is not None:
        negs = np.stack([[split_negatives(d, s) for s in SPLITS] for d in data])   # [T, 2, N]
        cand = np.concatenate([np.maximum(targets, 0)[:, :, None], negs], axis=2)  # [T, 2, 1+N]
        scores = score(cand)
        found = [candidate_metrics(scores[:, j], ks) for j in range(len(SPLITS))]
    else:
        full = score(None)                                              # [T, I]
        found = [full_ranking_metrics(full, np.maximum(targets[:, j], 0),
                                      [excluded(d, s) for d in data], ks)
                 for j, s in enumerate(SPLITS)]
    for j, split in enumerate(SPLITS):
        for u in np.flatnonzero(targets[:, j] >= 0):
            out[u].update({metric_key(split, n): float(v[u]) for n, v in found[j].items()})
    return out


# --------------------------------------------------------------------------- labelled impressions
def per_user_auc(users: np.ndarray, scores: np.ndarray, labels: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """AUC of each user's impressions (ties 0.5) and the user's impression count.

    users: int [N]; scores: float [N]; labels: 0/1 [N]. Returns (auc float [G], n int [G]) over
    the G distinct users in ascending id order; AUC is NaN for a user with only one class or
    a NaN score.
    """
    _, u = np.unique(np.asarray(users), return_inverse=True)
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    order = np.lexsort((s, u))                                          # by user, then score
    u, s, y = u[order], s[order], y[order]
    n = np.bincount(u)                                                  # [G]
    first = np.r_[True, (u[1:] != u[:-1]) | (s[1:] != s[:-1])]         # starts of tie blocks
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(s)]
    block = np.cumsum(first) - 1
    user_start = np.r_[0, np.cumsum(n)[:-1]]
    rank = (starts + ends - 1)[block] / 2.0 - user_start[u] + 1.0       # 1-based, ties averaged
    n_pos = np.bincount(u, weights=y, minlength=len(n))
    n_neg = n - n_pos
    u_stat = np.bincount(u, weights=rank * y, minlength=len(n)) - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where((n_pos > 0) & (n_neg > 0), u_stat / (n_pos * n_neg), np.nan)
    out[np.bincount(u, weights=np.isnan(s), minlength=len(n)) > 0] = np.nan
    return out, n


def macro_auc(users: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean per-user AUC over the users with both classes (NaN if there is none)."""
    return summarise({"auc": per_user_auc(users, scores, labels)[0]})["auc"]


def gauc(users: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> float:
    """GAUC (Zhou et al., KDD 2018, DIN): per-user AUC weighted by the user's impressions,
    over the users with both classes (NaN if there is none)."""
    per_user, n = per_user_auc(users, scores, labels)
    ok = ~np.isnan(per_user)
    return float((per_user[ok] * n[ok]).sum() / n[ok].sum()) if ok.any() else float("nan")


def logloss(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy of 0/1 ``labels`` under ``logits`` (the models' BCE scores),
    ``log(1 + e^z) - y z``, computed without overflow."""
    y, z = np.asarray(labels, dtype=np.float64), np.asarray(logits, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


# --------------------------------------------------------------------------- item promotion
def exposure_at_k(
    scores: np.ndarray,
    targets: np.ndarray,
    exclude: Relevant | None = None,
    ks: Sequence[int] = (5, 10),
) -> dict[str, np.ndarray]:
    """Per user: the share of its eligible target items ranked < k among all items (ER@k).

    Parameters
    ----------
    scores : float [U, n_items]
    targets : int [T]
        The promoted items.
    exclude : csr [U, n_items] or list of U item-id arrays, optional
        Items each user interacted with: scored -inf, and a target among them is not eligible.

    Returns
    -------
    dict
        ``{"ER@k": float [U]}``; NaN for a user with no eligible target. The mean over users
        equals the papers' ER@K (``fedrec.metrics.exposure_ratio_at_k``: the share of users
        exposed, averaged over targets) when every user is eligible for every target.
    """
    t = np.asarray(targets, dtype=np.int64).ravel()
    s = np.asarray(scores)
    ex = None if exclude is None else (
        sp.csr_matrix(exclude) if sp.issparse(exclude) else as_csr(exclude, s.shape[0], s.shape[1]))
    s = mask_scores(s, ex)                                              # [U, I]
    eligible = np.ones((s.shape[0], t.size), dtype=bool) if ex is None else \
        ex[:, t].toarray() == 0                                         # [U, T]
    ranks = np.zeros((s.shape[0], t.size), dtype=np.int64)
    for j, item in enumerate(t):
        ranks[:, j] = ranks_from_scores(s, int(item))
    n = eligible.sum(axis=1)                                            # [U]
    out: dict[str, np.ndarray] = {}
    for k in ks:
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"ER@{k}"] = np.where(n > 0, ((ranks < k) & eligible).sum(axis=1) / n, np.nan)
    return out
