"""Vectorised local training of many FedMF devices at once (cohort mode's fast path).

Each device trains its own copy of MF (private user vector p_u [D], local copies of the item
rows it touches, item biases) with plain SGD on mean BCE over mini-batches, exactly as
``clients.trainer.train_local`` does for one device; here all devices of a cohort take their
s-th mini-batch step together. Devices never interact: device u's numbers depend only on
its own inputs, so a cohort of 1 and a cohort of 64 give the same results (tested against
the per-device torch loop).

Gradients of the mean BCE of batch b (n_b rows), z = <p, q_i> + c_i:
  g_j = (sigmoid(z_j) - y_j) / n_b;  dp = sum_j g_j q_ij;  dq_i = sum_{j: i_j=i} g_j p;  dc_i = same with 1.
All gradients use the pre-step values (as torch's SGD does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class CohortInputs:
    """One cohort's local problem. U devices, T = total touched rows, S = max steps, B = batch.

    p0: float32 [U, D] user vectors; rows: int64 [T] global item id of each local row;
    owner_offsets: int64 [U+1] device u owns local rows offsets[u]:offsets[u+1];
    steps_idx: int64 [U, S, B] local row of each example (-1 = padding);
    steps_lab: float32 [U, S, B] labels; last_epoch: bool [U, S] step belongs to the last epoch.
    """

    p0: np.ndarray
    rows: np.ndarray
    owner_offsets: np.ndarray
    steps_idx: np.ndarray
    steps_lab: np.ndarray
    last_epoch: np.ndarray


def batch_steps(items: np.ndarray, labels: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """One epoch cut into mini-batches: [S_e, B] items (-1 pad) and labels."""
    n_steps = -(-len(items) // batch)
    idx = np.full(n_steps * batch, -1, dtype=np.int64)
    lab = np.zeros(n_steps * batch, dtype=np.float32)
    idx[: len(items)], lab[: len(labels)] = items, labels
    return idx.reshape(n_steps, batch), lab.reshape(n_steps, batch)


def build_inputs(p0: list[np.ndarray], epochs: list[list[tuple[np.ndarray, np.ndarray]]],
                 batch: int) -> CohortInputs:
    """Stack devices' epochs of (items, labels) into padded step tensors with local row ids."""
    rows, offsets, per_dev = [], [0], []
    for dev_epochs in epochs:
        touched = np.unique(np.concatenate([it for it, _ in dev_epochs]))  # [T_u] sorted
        cut = [batch_steps(np.searchsorted(touched, it) + offsets[-1], lab, batch)
               for it, lab in dev_epochs]
        last = np.zeros(sum(len(c[0]) for c in cut), dtype=bool)
        last[-len(cut[-1][0]):] = True
        per_dev.append((np.concatenate([c[0] for c in cut]), np.concatenate([c[1] for c in cut]), last))
        rows.append(touched)
        offsets.append(offsets[-1] + len(touched))
    n_steps = max(len(s[0]) for s in per_dev)
    U = len(epochs)
    idx = np.full((U, n_steps, batch), -1, dtype=np.int64)
    lab = np.zeros((U, n_steps, batch), dtype=np.float32)
    last = np.zeros((U, n_steps), dtype=bool)
    for u, (i, y, l) in enumerate(per_dev):
        idx[u, : len(i)], lab[u, : len(i)], last[u, : len(i)] = i, y, l
    # padding points at the device's own first row and carries zero gradient (masked)
    return CohortInputs(np.stack(p0).astype(np.float32), np.concatenate(rows),
                        np.asarray(offsets, dtype=np.int64), idx, lab, last)


def train_cohort(inp: CohortInputs, item_emb: np.ndarray, item_bias: np.ndarray, lr: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SGD for all devices. Returns (p [U, D], q_local [T, D], c_local [T], last-epoch loss [U])."""
    P = torch.from_numpy(inp.p0.copy())                                    # [U, D]
    Q = torch.from_numpy(item_emb[inp.rows].astype(np.float32))            # [T, D]
    C = torch.from_numpy(item_bias[inp.rows].astype(np.float32))           # [T]
    idx_all = torch.from_numpy(inp.steps_idx)                              # [U, S, B]
    lab_all = torch.from_numpy(inp.steps_lab)
    U, S, _ = idx_all.shape
    loss_sum = torch.zeros(U, dtype=torch.float64)
    n_last = torch.zeros(U, dtype=torch.float64)
    last = torch.from_numpy(inp.last_epoch)
    for s in range(S):
        mask = idx_all[:, s] >= 0                                          # [U, B]
        act = mask.any(1).nonzero().squeeze(1)                             # active devices
        m = mask[act]
        idx = torch.where(m, idx_all[act, s], torch.from_numpy(inp.owner_offsets[:-1])[act, None])
        y = lab_all[act, s]
        p = P[act]                                                         # [A, D]
        q = Q[idx]                                                         # [A, B, D]
        z = (q * p[:, None, :]).sum(-1) + C[idx]                           # [A, B]
        n_b = m.sum(1, keepdim=True).to(z.dtype)                           # [A, 1]
        g = (torch.sigmoid(z) - y) * m / n_b                               # [A, B]
        bce = F.binary_cross_entropy_with_logits(z, y, reduction="none") * m
        keep = last[act, s]
        loss_sum[act[keep]] += bce[keep].sum(1).double()
        n_last[act[keep]] += m[keep].sum(1).double()
        flat = idx.reshape(-1)
        Q.index_add_(0, flat, (-lr * g[..., None] * p[:, None, :]).reshape(-1, Q.shape[1]))
        C.index_add_(0, flat, (-lr * g).reshape(-1))
        P[act] = p - lr * (g[..., None] * q).sum(1)
    return P.numpy(), Q.numpy(), C.numpy(), (loss_sum / n_last.clamp(min=1)).numpy()


@torch.no_grad()
def score_candidates(p: np.ndarray, item_emb: np.ndarray, item_bias: np.ndarray,
                     cand: np.ndarray) -> np.ndarray:
    """MF scores of candidates: p [U, D], cand int64 [U, C] -> float32 [U, C]."""
    q = item_emb[cand]                                                      # [U, C, D]
    return np.einsum("ucd,ud->uc", q, p) + item_bias[cand]
