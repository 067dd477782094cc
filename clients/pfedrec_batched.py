"""Vectorised PFedRec local training and scoring of a cohort (cohort mode's fast path).

Each device u has its own score function (w_u [D], b_u) and local copies of the item rows
it touches; all devices of a cohort take their s-th mini-batch step together, with the
manual gradients of the per-device loop (clients.pfedrec_device.alternating_step). Devices
never interact, so a cohort of 1 and a cohort of 64 give the same numbers (tested against
the loop). Mini-batch b (n_b rows), z_j = <q_{i_j}, w> + b:

  step 1 (score function, lr):      g_j = (sigmoid(z_j) - y_j) / n_b
                                    w' = w - lr * sum_j g_j q_{i_j};  b' = b - lr * sum_j g_j
  step 2 (item rows, lr_item):      z'_j = <q_{i_j}, w'> + b';  g'_j = (sigmoid(z'_j) - y_j) / n_b
                                    q_i -= lr_item * sum_{j: i_j = i} g'_j w'

Pure functions of arrays; ``PFedRecDevice.fit_vectorised`` and ``score_many``
(clients.pfedrec_device) feed them a cohort's tasks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from clients.batched_mf import CohortInputs
from fedrec.payload import get_sparse
from fedrec.protocol import Arrays

W, B = "score_fn.1.weight", "score_fn.1.bias"   # the score function Linear(D, 1)


def train_cohort(inp: CohortInputs, item_emb: np.ndarray, lr: float, lr_item: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-step SGD for all devices. ``inp.p0`` holds [w_u ; b_u] per device [U, D+1].

    Returns (score functions [U, D+1], local item rows [T, D], last-epoch mean loss [U]).
    """
    P = torch.from_numpy(inp.p0.copy())                                     # [U, D+1]
    Q = torch.from_numpy(item_emb[inp.rows].astype(np.float32, copy=False))  # [T, D]
    idx_all, lab_all = torch.from_numpy(inp.steps_idx), torch.from_numpy(inp.steps_lab)
    last = torch.from_numpy(inp.last_epoch)                                 # [U, S]
    pad_row = torch.from_numpy(inp.owner_offsets[:-1])                      # [U]
    U, S, _ = idx_all.shape
    loss_sum = torch.zeros(U, dtype=torch.float64)
    n_last = torch.zeros(U, dtype=torch.float64)
    for s in range(S):
        mask = idx_all[:, s] >= 0                                           # [U, B]
        act = mask.any(1).nonzero().squeeze(1)                              # [A]
        m = mask[act].to(Q.dtype)                                           # [A, B]
        idx = torch.where(mask[act], idx_all[act, s], pad_row[act, None])   # [A, B]
        y = lab_all[act, s]
        q = Q[idx]                                                          # [A, B, D]
        n_b = m.sum(1, keepdim=True)                                        # [A, 1]
        w, b = P[act, :-1, None], P[act, -1:]                               # [A, D, 1], [A, 1]
        g = (torch.sigmoid(torch.bmm(q, w).squeeze(-1) + b) - y) * m / n_b  # [A, B]
        w = w - lr * torch.bmm(g[:, None, :], q).transpose(1, 2)            # [A, D, 1]
        b = b - lr * g.sum(1, keepdim=True)
        z = torch.bmm(q, w).squeeze(-1) + b                                 # [A, B]
        g = (torch.sigmoid(z) - y) * m / n_b
        keep = last[act, s]
        if keep.any():
            bce = F.binary_cross_entropy_with_logits(z[keep], y[keep], reduction="none") * m[keep]
            loss_sum[act[keep]] += bce.sum(1).double()
            n_last[act[keep]] += m[keep].sum(1).double()
        step = (-lr_item * g)[..., None] * w.transpose(1, 2)                # [A, B, D]
        Q.index_add_(0, idx.reshape(-1), step.reshape(-1, Q.shape[1]))
        P[act] = torch.cat([w.squeeze(-1), b], dim=1)
    return P.numpy(), Q.numpy(), (loss_sum / n_last.clamp(min=1)).numpy()


def rng_copy(rng: np.random.Generator) -> np.random.Generator:
    """An independent copy: a failed vectorised attempt must not advance a device's RNG."""
    bits = type(rng.bit_generator)()
    bits.state = rng.bit_generator.state
    return np.random.Generator(bits)


def score_vector(state: dict[str, np.ndarray]) -> np.ndarray:
    """[w ; b] of a device's score function, float32 [D+1]."""
    return np.concatenate([state[W].reshape(-1), state[B].reshape(-1)]).astype(np.float32)


def personal_candidates(emb: np.ndarray, state: dict[str, np.ndarray] | None, key: str,
                        cand: np.ndarray) -> np.ndarray:
    """Rows of ``cand`` [C] from the global table plus the device's own row changes. [C, D]"""
    q = emb[cand].astype(np.float32)
    if state is not None and f"{key}.idx" in state:
        rows = get_sparse(state, key)
        pos = np.searchsorted(rows.indices, cand)                           # indices are sorted
        found = rows.indices[np.minimum(pos, len(rows.indices) - 1)]
        hit = (pos < len(rows.indices)) & (found == cand)
        q[hit] += rows.values[pos[hit]]
    return q


def score_cohort(emb: np.ndarray, states: list[Arrays], cand: np.ndarray, key: str) -> np.ndarray:
    """Each device's personalised scores of its candidates, cand int [U, C] -> float32 [U, C]:
    <global row + own row change, w_u> + b_u. emb: the round's item table [I, D]; states: the
    devices' private states (score function, own row changes under ``key``)."""
    p = np.stack([score_vector(s) for s in states])                         # [U, D+1]
    q = np.stack([personal_candidates(emb, s, key, c)
                  for s, c in zip(states, cand, strict=True)])               # [U, C, D]
    return np.einsum("ucd,ud->uc", q, p[:, :-1]) + p[:, -1:]                 # [U, C]
