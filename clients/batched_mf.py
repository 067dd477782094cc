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
    """Stack devices' epochs of (items, labels) into padded step tensors with local row ids.

    Vectorised over the cohort: the K = sum_u E_u (device, epoch) blocks are concatenated
    (N examples), local rows come from one sort of (device, item) keys, and each example is
    scattered to its [device, step, slot] position. Each epoch starts a new mini-batch.
    """
    U = len(epochs)
    blocks = [(u, it, lab) for u, dev_epochs in enumerate(epochs) for it, lab in dev_epochs]
    dev = np.array([u for u, _, _ in blocks], dtype=np.int64)             # [K] owner of each block
    n = np.array([len(it) for _, it, _ in blocks], dtype=np.int64)        # [K] examples per block
    items = np.concatenate([it for _, it, _ in blocks]).astype(np.int64, copy=False)  # [N]
    labels = np.concatenate([lab for _, _, lab in blocks])                 # [N]
    rows, owner_offsets, local = local_rows(np.repeat(dev, n), items, U)
    steps = -(-n // batch)                                   # [K] mini-batches per block
    first = np.cumsum(steps) - steps                         # [K] cohort-wide first step
    start = first - first[np.searchsorted(dev, dev)]         # [K] first step within its device
    dev_steps = np.bincount(dev, weights=steps, minlength=U).astype(np.int64)  # [U]
    S = int(dev_steps.max(initial=0))
    # flat position in [U, S, B] of example j of block k: dev_k*S*B + start_k*B + j
    pos = np.arange(len(items)) + np.repeat(dev * S * batch + start * batch - (np.cumsum(n) - n), n)
    idx = np.full((U, S, batch), -1, dtype=np.int64)
    lab = np.zeros((U, S, batch), dtype=np.float32)
    idx.reshape(-1)[pos], lab.reshape(-1)[pos] = local, labels
    last_block = np.searchsorted(dev, np.arange(U), side="right") - 1    # [U] device's last epoch
    last_start = start[last_block]                                       # [U] its first step
    s = np.arange(S)
    last = (s >= last_start[:, None]) & (s < dev_steps[:, None])           # [U, S]
    # padding points at the device's own first row and carries zero gradient (masked)
    return CohortInputs(np.stack(p0).astype(np.float32), rows, owner_offsets, idx, lab, last)


def local_rows(owner: np.ndarray, items: np.ndarray, n_devices: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each device's touched items as consecutive local rows of the cohort.

    owner, items: int64 [N]. Returns rows int64 [T] (device u's sorted distinct items at
    offsets[u]:offsets[u+1]), offsets int64 [U+1] and the local row of each example [N].
    """
    span = int(items.max(initial=0)) + 1
    keys, local = np.unique(owner * span + items, return_inverse=True)  # [T] by (device, item)
    key_dev, rows = np.divmod(keys, span)
    offsets = np.zeros(n_devices + 1, dtype=np.int64)
    np.cumsum(np.bincount(key_dev, minlength=n_devices), out=offsets[1:])
    return rows, offsets, local.reshape(-1)


def step_order(steps_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Devices by decreasing step count, so the devices active at step s are a prefix.

    steps_idx int64 [U, S, B] (-1 = padding). Returns order int64 [U] and n_active int64 [S].
    """
    n_steps = (steps_idx[:, :, 0] >= 0).sum(1)                # [U] (a step fills from slot 0)
    order = np.argsort(-n_steps, kind="stable")
    n_active = (n_steps[:, None] > np.arange(steps_idx.shape[1])).sum(0)    # [S]
    return order, n_active


def train_cohort(inp: CohortInputs, item_emb: np.ndarray, item_bias: np.ndarray, lr: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SGD for all devices. Returns (p [U, D], q_local [T, D], c_local [T], last-epoch loss [U]).

    Devices are permuted by decreasing step count (``step_order``): at step s the A active
    devices are rows :A of every tensor, so per-step inputs are slices, not gathers.
    """
    order, n_active = step_order(inp.steps_idx)
    P = torch.from_numpy(inp.p0[order])                                    # [U, D] permuted copy
    Q = torch.from_numpy(np.take(item_emb, inp.rows, axis=0).astype(np.float32, copy=False))  # [T,D]
    C = torch.from_numpy(np.take(item_bias, inp.rows).astype(np.float32, copy=False))  # [T]
    idx_all = torch.from_numpy(inp.steps_idx[order])                       # [U, S, B] permuted
    lab_all = torch.from_numpy(inp.steps_lab[order])                       # [U, S, B]
    last = torch.from_numpy(inp.last_epoch[order])                         # [U, S]
    pad_row = torch.from_numpy(inp.owner_offsets[:-1][order])[:, None]     # [U, 1]
    U, _S, B = idx_all.shape
    D = Q.shape[1]
    loss_sum = torch.zeros(U, dtype=torch.float64)
    for s, A in enumerate(n_active.tolist()):
        valid = idx_all[:A, s] >= 0                                        # [A, B]
        m = valid.to(Q.dtype)                    # [A, B] 1/0: float masks multiply 4x faster
        idx = torch.where(valid, idx_all[:A, s], pad_row[:A]).reshape(-1)  # [A*B]
        y = lab_all[:A, s]                                                 # [A, B]
        p = P[:A]                                                          # [A, D] view
        q = Q.index_select(0, idx).view(A, B, D)                           # [A, B, D]
        z = (q * p[:, None, :]).sum(-1) + C.index_select(0, idx).view(A, B)  # [A, B]
        n_b = m.sum(1, keepdim=True)                                       # [A, 1] exact counts
        g = (torch.sigmoid(z) - y) * m / n_b                               # [A, B]
        bce = F.binary_cross_entropy_with_logits(z, y, reduction="none") * m
        loss_sum[:A] += torch.where(last[:A, s], bce.sum(1).double(), 0.0)
        Q.index_add_(0, idx, (-lr * g[..., None] * p[:, None, :]).view(-1, D))
        C.index_add_(0, idx, (-lr * g).view(-1))
        P[:A] = p - lr * (g[..., None] * q).sum(1)
    n_last = ((inp.steps_idx >= 0) & inp.last_epoch[..., None]).sum((1, 2))  # [U] original order
    inv = np.argsort(order)
    return P.numpy()[inv], Q.numpy(), C.numpy(), loss_sum.numpy()[inv] / np.maximum(n_last, 1)


@torch.no_grad()
def score_candidates(p: np.ndarray, item_emb: np.ndarray, item_bias: np.ndarray,
                     cand: np.ndarray) -> np.ndarray:
    """MF scores of candidates: p [U, D], cand int64 [U, C] -> float32 [U, C]."""
    q = item_emb[cand]                                                      # [U, C, D]
    return np.einsum("ucd,ud->uc", q, p) + item_bias[cand]
