"""Time the evaluation protocols at MovieLens-1M scale (6,040 users x 3,706 items).

Random scores and a random exclude matrix of ~1M training entries (ML-1M has 1,000,209
ratings) stand in for a trained model, so only the metric code is timed.

    python -m experiments.bench_metrics [--users 6040 --items 3706 --nnz 1000000 --chunk 1024]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from fedrec import metrics as m
from fedrec.evaluation import evaluate_full_ranking


def _timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls (seconds) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _random_exclude(n_users: int, n_items: int, nnz: int, rng: np.random.Generator):
    """csr [n_users, n_items] with ``nnz`` distinct random entries."""
    keys = rng.choice(n_users * n_items, size=nnz, replace=False)
    rows, cols = np.divmod(keys, n_items)
    return sp.csr_matrix((np.ones(nnz, dtype=np.float32), (rows, cols)), shape=(n_users, n_items))


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=6040)
    p.add_argument("--items", type=int, default=3706)
    p.add_argument("--nnz", type=int, default=1_000_000)
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    scores = rng.random((a.users, a.items), dtype=np.float32)  # [U, I]
    exclude = _random_exclude(a.users, a.items, a.nnz, rng)
    targets = rng.integers(0, a.items, a.users)
    users = np.arange(a.users)
    emb_u = rng.standard_normal((a.users, 64), dtype=np.float32)
    emb_i = rng.standard_normal((a.items, 64), dtype=np.float32)

    t: dict[str, float] = {}
    t["ranks (full_ranking_ranks)"], ranks = _timed(
        lambda: m.full_ranking_ranks(scores, targets, exclude), a.repeat)
    t["HR/NDCG/MRR@10,20 from ranks"], _ = _timed(
        lambda: m.summarise(m.rank_metrics(ranks, (10, 20))), a.repeat)
    t["topk_items k=20 (with exclude)"], top = _timed(
        lambda: m.topk_items(scores, 20, exclude), a.repeat)
    held_out = list(targets[:, None])
    t["Recall@10,20 from top-k"], _ = _timed(
        lambda: [m.recall_at_k(top[:, :k], held_out) for k in (10, 20)], a.repeat)
    t["evaluate_full_ranking, precomputed scores"], res = _timed(
        lambda: evaluate_full_ranking(lambda us: scores[us], users, targets, exclude,
                                        chunk=a.chunk), a.repeat)
    t["evaluate_full_ranking, MF dot-product scores"], _ = _timed(
        lambda: evaluate_full_ranking(lambda us: emb_u[us] @ emb_i.T, users, targets,
                                        exclude, chunk=a.chunk), a.repeat)
    t["sample_negatives n_neg=99 (once)"], neg = _timed(
        lambda: m.sample_negatives(a.items, exclude, n_neg=99, seed=a.seed), a.repeat)
    t["sampled protocol ranks + metrics"], _ = _timed(
        lambda: m.summarise(m.rank_metrics(m.sampled_ranks(
            scores[users, targets], np.take_along_axis(scores, neg, axis=1)))), a.repeat)

    print(f"{a.users} users x {a.items} items, exclude nnz={exclude.nnz}, chunk={a.chunk}, "
          f"best of {a.repeat}")
    for name, sec in t.items():
        print(f"  {name:<46s} {sec:8.3f} s")
    print("  random-score sanity (expect HR@10 ~ 10/(items - train)):",
          {k: round(v, 4) for k, v in res.items() if k.startswith(("HR", "Recall"))})
    return t


if __name__ == "__main__":
    main()
