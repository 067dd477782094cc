"""How malicious devices craft their uploads: pure numpy over upload dicts and item tables.

Every function keeps the protocol's payload format: the same keys, the same dtypes, row
indices int64 sorted and unique, values [K, W] of the table's width. Only row contents and
which rows are present change, as an honest device's would from round to round.

Item tables are taken as ``[n_items, W]`` (a 1-D bias table is ``[n_items, 1]``). The
score proxy of a table is the dot product ``<p_u, q_i>`` (exact for MF's item embeddings;
for NeuMF's two towers each table is promoted on its own proxy).
"""

from __future__ import annotations

import numpy as np

from fedrec.payload import SparseRows, add_sparse, get_sparse

Arrays = dict[str, np.ndarray]
IDX, VAL = ".idx", ".val"


def sparse_names(upload: Arrays) -> list[str]:
    """Tables an upload carries as SparseRows (``name.idx`` + ``name.val``), sorted."""
    return sorted(k[: -len(IDX)] for k in upload if k.endswith(IDX) and k[: -len(IDX)] + VAL in upload)


def as_rows(table: np.ndarray) -> np.ndarray:
    """A table as [n_items, W] (bias [n_items] -> [n_items, 1]); a view, not a copy."""
    return table.reshape(len(table), -1)


def set_rows(rows: SparseRows, idx: np.ndarray, values: np.ndarray) -> SparseRows:
    """``rows`` with rows ``idx`` [T] set to ``values`` [T, W] (inserted if absent); sorted."""
    keep = ~np.isin(rows.indices, idx)
    all_idx = np.concatenate([rows.indices[keep], idx]).astype(np.int64)  # [K']
    all_val = np.concatenate([rows.values[keep], values.astype(rows.values.dtype)])  # [K', W]
    order = np.argsort(all_idx, kind="stable")
    return SparseRows(all_idx[order], all_val[order])


def with_target_deltas(upload: Arrays, name: str, targets: np.ndarray,
                       deltas: np.ndarray) -> Arrays:
    """Copy of ``upload`` whose table ``name`` sends ``deltas`` [T, W] for the targets."""
    out = dict(upload)
    add_sparse(out, name, set_rows(get_sparse(upload, name), targets, deltas))
    return out


def scale_upload(upload: Arrays, factor: float) -> Arrays:
    """Every floating array times ``factor`` (scaled updates; factor < 0: sign flipping)."""
    return {k: (a * np.asarray(factor, a.dtype) if np.issubdtype(a.dtype, np.floating) else a)
            for k, a in upload.items()}


def noise_upload(upload: Arrays, std: float, rng: np.random.Generator) -> Arrays:
    """Every floating array replaced by N(0, std^2) noise of its shape (sorted-name order)."""
    noisy = {k: rng.normal(0.0, std, size=upload[k].shape).astype(upload[k].dtype)
             for k in sorted(upload) if np.issubdtype(upload[k].dtype, np.floating)}
    return {k: noisy.get(k, a) for k, a in upload.items()}


def alignment_deltas(table: np.ndarray, targets: np.ndarray, popular: np.ndarray) -> np.ndarray:
    """PipAttack-style: move each target row onto the centroid of the popular items' rows.

    Zhang et al., "PipAttack: Poisoning Federated Recommender Systems for Manipulating Item
    Promotion" (WSDM 2022) align target embeddings with popular items (the attacker knows
    the global model and item popularity); here the alignment is the direct step
    ``centroid(popular) - q_t``. Returns float64 [T, W].
    """
    rows = as_rows(table).astype(np.float64)  # [I, W]
    return rows[popular].mean(axis=0)[None, :] - rows[targets]


def top_eigenvalue(gram: np.ndarray, iters: int = 30) -> float:
    """Largest eigenvalue of a PSD matrix [W, W] by power iteration (LAPACK's eigvalsh costs
    ~50 ms per call here for a 32 x 32 matrix, power iteration ~0.2 ms)."""
    v = np.ones(len(gram)) / np.sqrt(len(gram))
    lam = 0.0
    for _ in range(iters):
        w = gram @ v
        lam = float(np.linalg.norm(w))
        if lam == 0.0:
            return 0.0
        v = w / lam
    return lam


def fit_user_proxies(table: np.ndarray, positives: list[np.ndarray], steps: int = 25,
                     l2: float = 1e-3) -> np.ndarray:
    """Approximate user vectors from known positives with the item table fixed.

    Balanced logistic regression per user (positives vs every other item, each side weighted
    to total 1), ``steps`` of gradient ascent from ``mean(q_pos) - mean(q_rest)``, step
    2 / lambda_max(Q^T Q / I). table [I, W]; returns float64 [U, W].
    """
    q = as_rows(table).astype(np.float64)  # [I, W]
    y = np.zeros((len(positives), len(q)))  # [U, I]
    for u, pos in enumerate(positives):
        y[u, pos] = 1.0
    n_pos = y.sum(1, keepdims=True)  # [U, 1]
    w = y / np.maximum(n_pos, 1) + (1 - y) / np.maximum(len(q) - n_pos, 1)  # [U, I]
    p = (y / np.maximum(n_pos, 1) - (1 - y) / np.maximum(len(q) - n_pos, 1)) @ q  # [U, W]
    lr = 2.0 / max(top_eigenvalue(q.T @ q / len(q)), 1e-12)
    for _ in range(steps):
        err = (y - 1.0 / (1.0 + np.exp(-(p @ q.T)))) * w  # [U, I]
        p += lr * (err @ q - l2 * p)
    return p


def promotion_deltas_each(table: np.ndarray, proxies: np.ndarray, targets: np.ndarray,
                          k: int = 10) -> np.ndarray:
    """Per user u: gradient of log sigmoid(<p_u, q_t> - s_u,k) w.r.t. each target row.

    s_u,k: the user's k-th highest proxy score over all items, so users whose top-k the
    target has not reached weigh most (FedRecAttack, Rong et al. ICDE 2022; PSMU, Yuan et
    al. SIGIR 2023 promote over the recommended items). A width-1 (bias) table uses p_u = 1.
    table [I, W], proxies [U, W'] ; returns float64 [U, T, W].
    """
    q = as_rows(table).astype(np.float64)  # [I, W]
    p = proxies if proxies.shape[1] == q.shape[1] else np.ones((len(proxies), q.shape[1]))
    scores = p @ q.T  # [U, I]
    kk = min(k, q.shape[0])
    kth = -np.partition(-scores, kk - 1, axis=1)[:, kk - 1]  # [U]
    margin = scores[:, targets] - kth[:, None]  # [U, T]
    weight = 1.0 / (1.0 + np.exp(margin))  # sigmoid(-margin) [U, T]
    return weight[:, :, None] * p[:, None, :]  # [U, T, W]


def promotion_deltas(table: np.ndarray, proxies: np.ndarray, targets: np.ndarray,
                     k: int = 10) -> np.ndarray:
    """Mean over users of ``promotion_deltas_each``: float64 [T, W]."""
    return promotion_deltas_each(table, proxies, targets, k).mean(axis=0)
