"""C3DRec's on-device fine-tuning for a cohort as one computation (``train`` for D devices).

Every device keeps its own parameters, stacked on a leading device axis: the GRU
([D, 3H, E], [D, 3H, H], [D, 3H] x 2) and its personal item rows ([D, R, E] of the input
table, [D, R, H] of the output table; ``fedrec.c3drec.cohort``). A step runs the GRU of
every active device with batched matrix products, scores each target against all items
(the downloaded output table for every row but the device's own, whose personal values
replace them), and takes one Adagrad step per device. Devices never interact: device i's
loss, gradients and updates read only row i, so it ends where ``train`` leaves its model
(tests/c3drec/test_batched.py), up to float rounding.

What ``train`` does on a device, and how it is kept here:

* trainable: input table, GRU and (``Cohort.learns``) the output rows of the device's
  clicked items; other output rows get no gradient (``train``'s own-rows mask);
* pruned weights (``masks``) take no gradient and stay zero;
* pull mode: the output table passes the sparse layer (|v| > gamma) and, with trainable
  rows, the L1 of the whole thresholded table (mean over items) joins the loss; push mode:
  the GRU state passes it and its L1 (mean over targets) joins the loss;
* Adagrad (lr, eps = 1e-10, no decay) with an accumulator per device and parameter.

The GRU and the full softmax run in hand-written kernels (``fedrec.c3drec.batched_ops``);
autograd joins them (item-row gathers, own-row scores, sparse layers, L1 terms).

Shapes as in ``fedrec.c3drec.cohort``; I items, E item embedding, H hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fedrec.c3drec.batched_ops import FullSoftmaxCE, GRUSeq, gru_last
from fedrec.c3drec.cohort import Schedule, Step
from fedrec.c3drec.train import SparseSpec
from fedrec.models.gru4rec import hard_threshold

ITEM, OUT = "item_emb.weight", "out.weight"
GRU = ("gru.weight_ih_l0", "gru.weight_hh_l0", "gru.bias_ih_l0", "gru.bias_hh_l0")
EPS = 1e-10   # torch.optim.Adagrad's default


@dataclass
class Cohort:
    """Personal parameters of D devices (``params``: ITEM [D, R, E], GRU names [D, ...], OUT
    [D, R, H] or absent) over their personal rows ``rows`` int64 [D, R] (``row_ok`` bool [D, R]
    says which are real), the keep-masks (``masks``: compact [D, R, C] for the tables, shared
    for the GRU) and, for OUT, which rows learn (``learns`` bool [D, R])."""

    params: dict[str, torch.Tensor]
    rows: torch.Tensor
    row_ok: torch.Tensor
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    learns: torch.Tensor | None = None

    def take(self, idx: torch.Tensor) -> Cohort:
        """The devices ``idx`` (a copy; per-device masks and rows follow them)."""
        per = {n: m[idx] for n, m in self.masks.items() if n in (ITEM, OUT)}
        return Cohort({n: p[idx] for n, p in self.params.items()}, self.rows[idx],
                      self.row_ok[idx], {**self.masks, **per},
                      None if self.learns is None else self.learns[idx])


@dataclass(frozen=True)
class Shared:
    """The downloaded model's parts every device reads: the output table as the devices'
    forward pass sees it (after pull's sparse layer) [I, H], and its per-row sum of |v| [I]
    (pull mode's L1)."""

    out: torch.Tensor
    out_abs: torch.Tensor


def shared(out: np.ndarray, spec: SparseSpec) -> Shared:
    v = torch.from_numpy(np.ascontiguousarray(out, np.float32))
    v = hard_threshold(v, spec.gamma) if spec.mode == "pull" else v
    return Shared(v, v.abs().sum(1))


# --------------------------------------------------------------------------- forward
def personal_out(c: Cohort, n_a: int, spec: SparseSpec) -> torch.Tensor:
    """The first n_a devices' own output rows as their forward pass sees them [A, R, H]."""
    v = c.params[OUT][:n_a]
    return hard_threshold(v, spec.gamma) if spec.mode == "pull" else v


def own_scores(u: torch.Tensor, device: torch.Tensor, slot: torch.Tensor, c: Cohort,
               spec: SparseSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores of the devices' own output rows: (rows int64 [P] into u [M, H], item ids [P],
    scores [P]), rows ascending. Row m belongs to device ``device[m]`` (its ``slot[m]``-th)."""
    n_a, n_s = int(device.max()) + 1, int(slot.max()) + 1
    pad = u.new_zeros(n_a, n_s, u.shape[1]).index_put((device, slot), u)     # [A, N, H]
    mine = torch.bmm(pad, personal_out(c, n_a, spec).transpose(1, 2))         # [A, N, R]
    m, r = c.row_ok[:n_a][device].nonzero(as_tuple=True)                      # [P]
    return m, c.rows[:n_a][device[m], r], mine[device[m], slot[m], r]


def scores(u: torch.Tensor, device: torch.Tensor, slot: torch.Tensor, g: Shared,
           c: Cohort, spec: SparseSpec) -> torch.Tensor:
    """Scores [M, I] of every item for user embeddings u [M, H]: ``u . v`` with the device's
    own output rows where it has them (no grad)."""
    s = u @ g.out.T                                                            # [M, I]
    if OUT in c.params and len(u):
        m, col, val = own_scores(u, device, slot, c, spec)
        s[m, col] = val
    return s


def step_loss(c: Cohort, g: Shared, st: Step, spec: SparseSpec, n_items: int) -> torch.Tensor:
    """Each active device's ``batch_loss`` [A]: mean next-click cross-entropy over all items
    (+ lasso x L1 of its sparse layer)."""
    n_a = len(st.count)
    inp = torch.from_numpy(st.inp)
    x = c.params[ITEM][torch.arange(n_a)[:, None, None], inp]                 # [A, B, T, E]
    states = GRUSeq.apply(x, *(c.params[n][:n_a] for n in GRU))
    dev, slot = torch.from_numpy(st.device), torch.from_numpy(st.slot)
    flat = torch.from_numpy(np.flatnonzero(st.valid))
    u = states.reshape(-1, states.shape[-1])[flat]                            # [M, H]
    count = torch.from_numpy(st.count).to(u.dtype)
    l1 = u.new_zeros(n_a)
    if spec.mode == "push":
        u = hard_threshold(u, spec.gamma)
        l1 = u.new_zeros(n_a).index_add(0, dev, u.abs().sum(1)) / count
    elif spec.mode == "pull" and OUT in c.params and c.learns is not None:
        own = personal_out(c, n_a, spec).abs().sum((1, 2))                    # [A]
        rows = (g.out_abs[c.rows[:n_a]] * c.row_ok[:n_a]).sum(1)              # global values
        l1 = (g.out_abs.sum() - rows + own) / n_items
    y = torch.from_numpy(st.target)
    if OUT in c.params:
        m, col, given = own_scores(u, dev, slot, c, spec)
    else:
        m = col = torch.zeros(0, dtype=torch.long)
        given = u.new_zeros(0)
    hit = col == y[m]
    target_given = torch.zeros(len(y), dtype=torch.bool).index_fill(0, m[hit], True)
    ce = FullSoftmaxCE.apply(u, given, g.out, y, m, col, hit, target_given)
    loss = u.new_zeros(n_a).index_add(0, dev, ce) / count
    return loss + spec.lasso * l1 if spec.mode != "none" else loss


# --------------------------------------------------------------------------- training
def trains(c: Cohort, name: str) -> bool:
    """OUT learns only where the device fine-tunes its own item rows (``learns``)."""
    return name != OUT or c.learns is not None


def _leaves(c: Cohort, n_a: int) -> dict[str, torch.Tensor]:
    return {n: p[:n_a].detach().requires_grad_(trains(c, n)) for n, p in c.params.items()}


def _masked_grad(c: Cohort, name: str, grad: torch.Tensor, n_a: int) -> torch.Tensor:
    """The gradient (in place) without pruned entries and, for OUT, rows that do not learn."""
    if name == OUT and c.learns is not None:
        grad.mul_(c.learns[:n_a, :, None])
    m = c.masks.get(name)
    return grad if m is None else grad.mul_(m[:n_a] if name in (ITEM, OUT) else m)


@torch.no_grad()
def _adagrad(p: torch.Tensor, g: torch.Tensor, acc: torch.Tensor, scratch: torch.Tensor,
             lr: float, rows_style: bool) -> None:
    """``torch.optim.Adagrad.step`` in place (g and scratch are overwritten): dense form, or
    (``rows_style``) the form its sparse-gradient branch takes (an embedding's touched rows);
    untouched rows (g = 0) stay."""
    acc.addcmul_(g, g, value=1)
    std = torch.sqrt(acc, out=scratch).add_(EPS)
    if rows_style:
        p.add_(g.div_(std), alpha=-lr)
    else:
        p.addcdiv_(g, std, value=-lr)


def finetune_many(c: Cohort, g: Shared, schedule: Schedule, spec: SparseSpec, lr: float,
                  n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Train the cohort in place, one batched step per schedule step. Returns each device's
    loss (float32) and targets (int64) at every step, [D, S] (NaN / 0 where it has none).

    Tensors with one mask for every device (the GRU's pruned matrices) keep their Adagrad
    state on the kept entries only; their pruned entries are zeroed once and never move."""
    kept = {n: m.flatten().nonzero().flatten() for n, m in c.masks.items()
            if n not in (ITEM, OUT)}
    with torch.no_grad():
        for n, m in c.masks.items():
            if n in kept:
                c.params[n].mul_(m)
    acc = {n: p.new_zeros(len(p), len(kept[n])) if n in kept else torch.zeros_like(p)
           for n, p in c.params.items() if trains(c, n)}
    scratch = {n: torch.empty_like(a) for n, a in acc.items()}
    losses = np.full((len(c.rows), schedule.n_steps), np.nan, np.float32)
    counts = np.zeros((len(c.rows), schedule.n_steps), np.int64)
    full = c.params
    for s in range(schedule.n_steps):
        st = schedule[s]
        n_a = len(st.count)
        c.params = _leaves(c, n_a)
        loss = step_loss(c, g, st, spec, n_items)
        loss.sum().backward()
        losses[:n_a, s], counts[:n_a, s] = loss.detach().numpy(), st.count
        with torch.no_grad():
            for n, leaf in c.params.items():
                if leaf.grad is None:
                    continue
                p, a, tmp = full[n][:n_a], acc[n][:n_a], scratch[n][:n_a]
                if n in kept:                                   # the kept entries only
                    flat = p.view(n_a, -1)
                    on = flat[:, kept[n]]
                    _adagrad(on, leaf.grad.view(n_a, -1)[:, kept[n]], a, tmp, lr, False)
                    flat[:, kept[n]] = on
                    continue
                _adagrad(p, _masked_grad(c, n, leaf.grad, n_a), a, tmp, lr, n == ITEM)
                if n in c.masks:
                    p.mul_(c.masks[n][:n_a])
        c.params = full
    return losses, counts


def epoch_loss(losses: np.ndarray, counts: np.ndarray, last_epoch: int) -> float:
    """``train``'s reported loss: the last epoch's step losses weighted by their targets
    (losses float32 [S_i], counts int [S_i]), summed in float64 in step order."""
    total, n = 0.0, 0
    for loss, k in zip(losses[last_epoch:], counts[last_epoch:], strict=True):
        total, n = total + float(loss) * int(k), n + int(k)
    return total / max(n, 1)


# --------------------------------------------------------------------------- recommendation
@torch.no_grad()
def user_embeddings_many(c: Cohort, table: torch.Tensor, local: np.ndarray, items: np.ndarray,
                         length: np.ndarray, spec: SparseSpec) -> torch.Tensor:
    """User embedding of each test event [A, E, H] with its device's personal model (history
    items read the device's own input rows where it has them, else ``table`` [I, E]); push
    mode: after the sparse layer. ``local``/``items``/``length``: ``cohort.Histories``."""
    loc, ids, n = (torch.from_numpy(a) for a in (local, items, length))
    n_a, n_l = loc.shape[0], loc.shape[2]
    mine = c.params[ITEM][torch.arange(n_a)[:, None, None], loc.clamp(min=0)]
    x = torch.where((loc >= 0)[..., None], mine, table[ids])
    x = x * (torch.arange(n_l) < n[..., None])[..., None]                # PAD: zero vector
    u = gru_last(x, n, *(c.params[k][:n_a] for k in GRU))
    return hard_threshold(u, spec.gamma) if spec.mode == "push" else u
