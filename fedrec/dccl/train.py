"""DCCL's training steps as pure functions over a ``PatchedDIN`` and ``CTRRows``.

* ``fit_epochs``: mini-batch Adam on one parameter group with BCE plus ``beta`` times the
  Bernoulli KL to a teacher's logits. With the backbone group it is pre-training (Eq. 4) or
  MoMoDistill step 1 (Eq. 5); with the basis group and ``meta = U(theta, u)`` it is step 2
  (Eq. 7), or the pre-training of Theta with theta = 0 (Algorithm 1).
* ``metapatch_fit``: MetaPatch (Eq. 3) of many devices at once: their metapatches are one
  [D, K] tensor, every step takes the next mini-batch of each device that has one, and a
  row-wise Adam moves only those devices' rows. A device's result depends on its own rows
  alone, so a cohort equals the per-device loop (tests/dccl/test_train.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fedrec.dccl.data import CTRRows
from fedrec.models.base import Batch
from fedrec.models.patched_din import PatchedDIN

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
EVAL_ROWS = 4096
# Rows per forward/backward pass inside a mini-batch (gradients accumulated): DIN's attention
# activations of 1024 rows x 50 positions outgrow the CPU's cache (1024 in one pass: 164 ms
# per step on this machine, 4 x 256: 100 ms). The mini-batch and its Adam step are unchanged.
MICRO_ROWS = 256


def to_batch(rows: CTRRows, profiles: np.ndarray | None, meta: torch.Tensor | None = None) -> Batch:
    """A model batch of ``rows``; ``profiles`` [U, P] indexed by owner; ``meta`` [N, K]."""
    prof = None if profiles is None else torch.from_numpy(profiles[rows.owner])
    return Batch(items=torch.from_numpy(rows.item), labels=torch.from_numpy(rows.label),
                 history=torch.from_numpy(rows.history), profile=prof, meta=meta)


def bernoulli_kl(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """KL(Bern(sigmoid(teacher)) || Bern(sigmoid(student))) per row, from logits [N] -> [N]."""
    p = torch.sigmoid(teacher)
    return (p * (F.logsigmoid(teacher) - F.logsigmoid(student))
            + (1 - p) * (F.logsigmoid(-teacher) - F.logsigmoid(-student)))


def distill_loss(logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None,
                 beta: float) -> torch.Tensor:
    """Eq. 5 / Eq. 7: mean BCE + beta * mean KL(teacher || student)."""
    loss = F.binary_cross_entropy_with_logits(logits, labels)
    if teacher is not None and beta > 0:
        loss = loss + beta * bernoulli_kl(teacher, logits).mean()
    return loss


def frozen(model: PatchedDIN, rows: CTRRows, profiles: np.ndarray | None) -> torch.Tensor:
    """f's features of ``rows``' own items [N, 1, in], no gradients."""
    prof = None if profiles is None else torch.from_numpy(profiles[rows.owner])
    return model.frozen_features(torch.from_numpy(rows.history), prof,
                                 torch.from_numpy(rows.item)[:, None])


@torch.no_grad()
def row_logits(model: PatchedDIN, rows: CTRRows, profiles: np.ndarray | None,
               meta_of: Callable[[CTRRows], torch.Tensor | None]) -> np.ndarray:
    """Logits of every row (float32 [N]), in chunks; ``meta_of(chunk)`` gives its metapatches."""
    out = [model.head(frozen(model, part, profiles), meta_of(part))[:, 0].numpy()
           for part in (rows.take(np.arange(s, min(s + EVAL_ROWS, len(rows))))
                        for s in range(0, len(rows), EVAL_ROWS))]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def fit_epochs(model: PatchedDIN, names: list[str], rows_of: Callable[[int], CTRRows],
               profiles: np.ndarray | None, meta_of: Callable[[CTRRows], torch.Tensor | None],
               teacher_of: Callable[[CTRRows], np.ndarray] | None, *, epochs: int, lr: float,
               batch: int, beta: float, seed: int,
               progress: Callable[[str], None] | None = None) -> list[float]:
    """Adam on the parameters ``names`` only, ``epochs`` passes over ``rows_of(epoch)``.

    meta_of: the rows' metapatches (None: f alone); teacher_of: the rows' teacher logits
    (float [N]; None: no distillation). Returns the mean loss of each epoch.
    """
    params = model.group(names)
    fixed = [p for p in model.parameters() if all(p is not q for q in params)]
    for p in fixed:
        p.requires_grad_(False)
    opt = torch.optim.Adam(params, lr=lr)
    f_frozen = not set(names) & set(model.backbone_names())       # Eq. 7: no gradient into f
    losses: list[float] = []
    try:
        for epoch in range(epochs):
            rows = rows_of(epoch)
            teacher = None if teacher_of is None else torch.from_numpy(teacher_of(rows))
            order = np.random.default_rng([seed, epoch]).permutation(len(rows))
            total = 0.0
            for s in range(0, len(rows), batch):
                idx = order[s:s + batch]
                opt.zero_grad()
                for lo in range(0, len(idx), MICRO_ROWS):                  # same gradient
                    sub = idx[lo:lo + MICRO_ROWS]
                    part = rows.take(sub)
                    x = (frozen(model, part, profiles) if f_frozen else
                         model.features(to_batch(part, profiles), model.items(
                             torch.from_numpy(part.item)[:, None])))          # [b, 1, in]
                    logits = model.head(x, meta_of(part))[:, 0]
                    loss = distill_loss(logits, torch.from_numpy(part.label),
                                        None if teacher is None else teacher[sub], beta)
                    (loss * (len(sub) / len(idx))).backward()
                    total += float(loss.detach()) * len(sub)
                opt.step()
            losses.append(total / max(len(rows), 1))
            if progress is not None:
                progress(f"epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f} ({len(rows)} rows)")
    finally:
        for p in fixed:
            p.requires_grad_(True)
    return losses


def frozen_copy(model: PatchedDIN) -> PatchedDIN:
    """A detached snapshot (the teacher: old f and old Theta)."""
    old = copy.deepcopy(model)
    for p in old.parameters():
        p.requires_grad_(False)
    return old


# --------------------------------------------------------------------------- MetaPatch
def padded_step(rows: list[CTRRows], step: int, batch: int) -> tuple[list[int], dict[str, torch.Tensor]]:
    """Mini-batch ``step`` of every device that has one, padded to ``batch`` rows each.

    Returns the active devices' indexes and tensors items/labels/mask [A, b], history
    [A, b, L] (padding: item 0, empty history, mask 0)."""
    active = [i for i, r in enumerate(rows) if len(r) > step * batch]
    L = rows[active[0]].history.shape[1]
    items = np.zeros((len(active), batch), np.int64)
    labels = np.zeros((len(active), batch), np.float32)
    mask = np.zeros((len(active), batch), np.float32)
    hist = np.full((len(active), batch, L), -1, np.int64)
    for a, i in enumerate(active):
        part = rows[i].take(np.arange(step * batch, min((step + 1) * batch, len(rows[i]))))
        n = len(part)
        items[a, :n], labels[a, :n], mask[a, :n], hist[a, :n] = part.item, part.label, 1.0, part.history
    return active, {"items": torch.from_numpy(items), "labels": torch.from_numpy(labels),
                    "mask": torch.from_numpy(mask), "history": torch.from_numpy(hist)}


def adam_rows(theta: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor],
              rows: torch.Tensor, lr: float) -> None:
    """One Adam step (Kingma & Ba 2015) on ``theta[rows]`` only; each row keeps its own step
    count, so a device's trajectory does not depend on the others. grad [A, K]."""
    b1, b2 = ADAM_BETAS
    state["t"][rows] += 1
    t = state["t"][rows].unsqueeze(1)                                         # [A, 1]
    state["m"][rows] = b1 * state["m"][rows] + (1 - b1) * grad
    state["v"][rows] = b2 * state["v"][rows] + (1 - b2) * grad * grad
    denom = state["v"][rows].sqrt() / (1 - b2 ** t).sqrt() + ADAM_EPS          # torch's form
    theta[rows] -= (lr / (1 - b1 ** t)) * state["m"][rows] / denom


def metapatch_fit(model: PatchedDIN, epochs_rows: list[list[CTRRows]], profiles: np.ndarray | None,
                  theta0: torch.Tensor, *, lr: float, batch: int) -> tuple[torch.Tensor, np.ndarray]:
    """Eq. 3 for D devices at once: f and Theta frozen, each device's metapatch trained on its
    own rows.

    epochs_rows[i][e]: device i's rows of epoch e, already in its own shuffled order;
    profiles: [D, P] each device's profile (or None); theta0: [D, K].
    Returns (theta [D, K], each device's mean loss over its last epoch, float64 [D]).
    """
    D, K = theta0.shape
    theta = theta0.detach().clone()
    state = {"t": torch.zeros(D), "m": torch.zeros(D, K), "v": torch.zeros(D, K)}
    last = np.full(D, np.nan)
    for p in model.parameters():
        p.requires_grad_(False)
    for e in range(max((len(r) for r in epochs_rows), default=0)):
        rows = [r[e] for r in epochs_rows]
        sums, counts = np.zeros(D), np.zeros(D)
        n_steps = max((-(-len(r) // batch) for r in rows), default=0)
        for step in range(n_steps):
            active, t = padded_step(rows, step, batch)
            A, b, L = t["history"].shape
            sel = torch.tensor(active)
            th = theta[sel].clone().requires_grad_(True)                      # [A, K]
            prof = None
            if profiles is not None:
                prof = torch.from_numpy(profiles[active]).repeat_interleave(b, dim=0)
            meta = th[:, None, :].expand(A, b, K).reshape(A * b, K)
            x = model.frozen_features(t["history"].view(A * b, L), prof,
                                      t["items"].view(A * b, 1))               # [A*b, 1, in]
            logits = model.head(x, meta).view(A, b)
            per = F.binary_cross_entropy_with_logits(logits, t["labels"], reduction="none")
            dev_loss = (per * t["mask"]).sum(1) / t["mask"].sum(1)            # [A]
            dev_loss.sum().backward()
            assert th.grad is not None
            adam_rows(theta, th.grad, state, sel, lr)
            sums[active] += (per * t["mask"]).sum(1).detach().numpy()
            counts[active] += t["mask"].sum(1).numpy()
        done = counts > 0
        last[done] = sums[done] / counts[done]
    for p in model.parameters():
        p.requires_grad_(True)
    return theta, last
