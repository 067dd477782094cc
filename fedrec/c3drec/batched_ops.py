"""Hand-written forward/backward kernels of C3DRec's batched fine-tuning (plain torch).

* ``GRUSeq``: a GRU with per-device weights over [A, B, T] inputs (torch's gate order r, z,
  n; state 0 at t = 0). Autograd over a per-time-step loop would accumulate a weight
  gradient per step; here back-propagation through time keeps only the per-step gate
  gradients and forms the weight gradients with one batched product at the end.
* ``FullSoftmaxCE``: next-click cross-entropy over all items for M user embeddings, in row
  blocks of at most ``BLOCK_ELEMENTS`` scores (no [M, I] tensor is kept), with some
  (row, item) scores given from outside (a device's own item rows) and their gradients
  returned to it. The gradient is formed in the forward pass: the loss is linear in the
  per-row weights the backward pass brings.
* ``topk_rows``: ``fedrec.metrics.topk_items`` (ties to the lower id) in torch.

Shapes: A devices, B pieces, T steps, E input width, H state width, I items, M rows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd import Function

BLOCK_ELEMENTS = 1 << 21   # scores per block (8 MiB float32: stays in the last-level cache)


def _cell(gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor,
          n_h: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One GRU step from the input and recurrent gate pre-activations [.., 3H] -> (h', r, z, n)."""
    rz = torch.sigmoid(gi[..., :2 * n_h] + gh[..., :2 * n_h])
    r, z = rz[..., :n_h], rz[..., n_h:]
    n = torch.tanh(gi[..., 2 * n_h:] + r * gh[..., 2 * n_h:])
    return n + z * (h - n), r, z, n                                      # (1 - z) n + z h


def input_gates(x: torch.Tensor, w_ih: torch.Tensor, b_ih: torch.Tensor) -> torch.Tensor:
    """x [A, B, T, E] -> W_ih x + b_ih [A, B, T, 3H] (one batched product per device)."""
    n_a, n_b, n_t, n_e = x.shape
    return torch.baddbmm(b_ih[:, None, :], x.reshape(n_a, n_b * n_t, n_e),
                         w_ih.transpose(1, 2)).view(n_a, n_b, n_t, -1)


def _gru_forward(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
                 b_hh: torch.Tensor) -> torch.Tensor:
    """Time-major states and the gate values back-propagation reads: keep [T, 5, A, B, H]
    (h, r, z, n, W_hn h + b_hn at every step)."""
    n_a, n_b, n_t, _ = x.shape
    n_h = w_hh.shape[2]
    gi = input_gates(x, w_ih, b_ih).permute(2, 0, 1, 3).contiguous()     # [T, A, B, 3H]
    wt = w_hh.transpose(1, 2).contiguous()                               # [A, H, 3H]
    keep = x.new_empty(n_t, 5, n_a, n_b, n_h)
    h = x.new_zeros(n_a, n_b, n_h)
    gh = x.new_empty(n_a, n_b, 3 * n_h).copy_(b_hh[:, None, :])       # never a view of b_hh
    for t in range(n_t):
        if t:
            torch.baddbmm(b_hh[:, None, :], h, wt, out=gh)
        k = keep[t]
        rz = torch.sigmoid(gi[t, ..., :2 * n_h] + gh[..., :2 * n_h])
        k[1], k[2], k[4] = rz[..., :n_h], rz[..., n_h:], gh[..., 2 * n_h:]
        torch.tanh(gi[t, ..., 2 * n_h:] + k[1] * k[4], out=k[3])
        torch.addcmul(k[3], k[2], h - k[3], out=k[0])                    # n + z (h - n)
        h = k[0]
    return keep


def _gru_backward(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, keep: torch.Tensor,
                  d_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Back-propagation through time: (dx, dW_ih, dW_hh, db_ih, db_hh)."""
    n_a, n_b, n_t, n_e = x.shape
    n_h = w_hh.shape[2]
    d_out = d_states.permute(2, 0, 1, 3).contiguous()                     # [T, A, B, H]
    d_gi = x.new_empty(n_t, n_a, n_b, 3 * n_h)
    d_gh = x.new_empty(n_t, n_a, n_b, 3 * n_h)
    dh = x.new_zeros(n_a, n_b, n_h)
    zero = x.new_zeros(n_a, n_b, n_h)
    for t in range(n_t - 1, -1, -1):
        dh = dh + d_out[t]
        _, r, z, n, ghn = keep[t]
        prev = keep[t - 1, 0] if t else zero
        d_pre_n = dh * (1 - z) * (1 - n * n)
        d_gi[t, ..., :n_h] = d_pre_n * ghn * r * (1 - r)
        d_gi[t, ..., n_h:2 * n_h] = dh * (prev - n) * z * (1 - z)
        d_gi[t, ..., 2 * n_h:] = d_pre_n
        d_gh[t, ..., :2 * n_h] = d_gi[t, ..., :2 * n_h]
        d_gh[t, ..., 2 * n_h:] = d_pre_n * r
        if t:
            dh = torch.baddbmm(dh * z, d_gh[t], w_hh)
    gi2 = d_gi.permute(1, 2, 0, 3).reshape(n_a, n_b * n_t, 3 * n_h)
    gh2 = d_gh.permute(1, 2, 0, 3).reshape(n_a, n_b * n_t, 3 * n_h)
    prev_all = torch.cat([zero[None], keep[:-1, 0]]).permute(1, 2, 0, 3).reshape(n_a, n_b * n_t, n_h)
    dx = torch.bmm(gi2, w_ih).view(n_a, n_b, n_t, n_e)
    d_wih = torch.bmm(gi2.transpose(1, 2), x.reshape(n_a, n_b * n_t, n_e))
    d_whh = torch.bmm(gh2.transpose(1, 2), prev_all)
    return dx, d_wih, d_whh, gi2.sum(1), gh2.sum(1)


class GRUSeq(Function):
    """states [A, B, T, H] = GRU(x [A, B, T, E]; w_ih [A, 3H, E], w_hh [A, 3H, H],
    b_ih [A, 3H], b_hh [A, 3H]), each device with its own weights."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                b_ih: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
        keep = _gru_forward(x, w_ih, w_hh, b_ih, b_hh)
        ctx.save_for_backward(x, w_ih, w_hh, keep)
        return keep[:, 0].permute(1, 2, 0, 3)                            # [A, B, T, H]

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, w_ih, w_hh, keep = ctx.saved_tensors
        return _gru_backward(x, w_ih, w_hh, keep, grads[0])


def gru_last(x: torch.Tensor, length: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
             b_ih: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """The state after the first ``length`` [A, B] steps of x [A, B, L, E] -> [A, B, H]
    (``GRU4Rec.user_embedding`` of right-padded histories; 0 for an empty one). No grad."""
    n_h = w_hh.shape[2]
    gi = input_gates(x, w_ih, b_ih)
    wt = w_hh.transpose(1, 2).contiguous()
    h = last = x.new_zeros(*x.shape[:2], n_h)
    gh = x.new_empty(*x.shape[:2], 3 * n_h)
    for t in range(int(length.max()) if length.numel() else 0):
        h = _cell(gi[:, :, t], torch.baddbmm(b_hh[:, None, :], h, wt, out=gh), h, n_h)[0]
        last = torch.where((length == t + 1)[..., None], h, last)
    return last


class FullSoftmaxCE(Function):
    """Cross-entropy of each row's target over all items, ce [M], from user embeddings
    u [M, H] and item embeddings v [I, H]: ``logsumexp(s_m) - s_m[y_m]`` with
    ``s = u v^T``, except the P scores ``s[rows[p], cols[p]] = given[p]`` (rows ascending).
    ``given`` gets the gradient of its scores; v is a constant. ``own_target`` bool [P]:
    cols[p] is row p's target; ``target_given`` bool [M]: the row's target score is given."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, given: torch.Tensor, v: torch.Tensor,
                target: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                own_target: torch.Tensor, target_given: torch.Tensor) -> torch.Tensor:
        n_m, n_i = len(u), len(v)
        step = max(BLOCK_ELEMENTS // max(n_i, 1), 1)
        ce = u.new_empty(n_m)
        g_u = u.new_empty(u.shape)                                       # d ce_m / d u_m
        g_given = given.new_empty(given.shape)
        bounds = torch.searchsorted(rows, torch.arange(0, n_m + step, step))
        buf = u.new_empty(min(step, n_m), n_i)
        vt = v.T
        for b, lo in enumerate(range(0, n_m, step)):
            hi = min(lo + step, n_m)
            s = torch.mm(u[lo:hi], vt, out=buf[:hi - lo])                # [b, I]
            p0, p1 = int(bounds[b]), int(bounds[b + 1])
            pr, pc = rows[p0:p1] - lo, cols[p0:p1]
            s[pr, pc] = given[p0:p1]
            y = target[lo:hi, None]
            top = s.amax(1, keepdim=True)
            at_y = s.gather(1, y)
            s.sub_(top).exp_()                                           # unnormalised softmax
            total = s.sum(1, keepdim=True)
            ce[lo:hi] = (total.log() + top - at_y).squeeze(1)
            g_given[p0:p1] = s[pr, pc] / total[pr, 0] - own_target[p0:p1].to(s.dtype)
            s[pr, pc] = 0.0                                              # not scored with v
            g = torch.mm(s, v).div_(total)
            g_u[lo:hi] = g - v[target[lo:hi]] * (~target_given[lo:hi]).to(g.dtype)[:, None]
        ctx.save_for_backward(g_u, g_given, rows)
        return ce

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        g_u, g_given, rows = ctx.saved_tensors
        w = grads[0]
        return g_u * w[:, None], g_given * w[rows], None, None, None, None, None, None


def topk_rows(s: torch.Tensor, k: int) -> torch.Tensor:
    """``fedrec.metrics.topk_items`` in torch: the ids of the k highest scores of each row of
    s [M, I], best first; ties go to the lower id, NaN counts as -inf. -> int64 [M, k]"""
    s = torch.where(torch.isnan(s), torch.full_like(s, -torch.inf), s)
    k = min(k, s.shape[1])
    if k == 0 or not len(s):
        return torch.zeros(len(s), k, dtype=torch.long)
    kth = torch.topk(s, k, dim=1, sorted=False).values.min(1, keepdim=True).values   # [M, 1]
    chosen = s >= kth
    crowded = (chosen.sum(1) > k).nonzero().flatten()           # ties at the k-th value
    if len(crowded):
        sub, cut = s[crowded], kth[crowded]
        tie = sub == cut
        room = k - (sub > cut).sum(1, keepdim=True)
        chosen[crowded] = (sub > cut) | (tie & (tie.cumsum(1) <= room))
    cols = chosen.nonzero()[:, 1].view(len(s), k)                # ascending ids per row
    order = torch.sort(-s.gather(1, cols), dim=1, stable=True).indices
    return cols.gather(1, order)
