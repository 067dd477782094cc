"""Vectorised local training of a cohort for ANY pointwise RecModel (torch.func.vmap).

Every device of the cohort gets its own copy of the parameters it trains: private ones from
its state, dense shared ones from the broadcast, and, for each sparse table, only the rows it
touches (padded to the cohort's largest touched set). All devices take their s-th mini-batch
step together: ``vmap`` over devices of a masked mean-BCE of ``model.score``, one autograd
call, one SGD update. Devices never interact, so the numbers equal the per-device loop
(clients.trainer.train_local) and do not depend on the cohort size (tested).

Shapes: U devices, T = max touched rows, S = max steps, B = batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from clients.batched_mf import batch_steps
from fedrec.models.base import Batch, RecModel


class _Scorer(nn.Module):
    """Adapter: ``forward`` = ``inner.score`` so functional_call can swap its parameters."""

    def __init__(self, inner: RecModel) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, items: torch.Tensor) -> torch.Tensor:  # items [B] -> logits [B]
        users = torch.zeros(items.shape[0], dtype=torch.long)
        return self.inner.score(Batch(users=users), items[:, None])[:, 0]


@dataclass
class CohortSteps:
    """touched: per device sorted global item ids [T_u]; idx/lab: [U, S, B] local rows (-1 pad);
    last: bool [U, S] step of the last epoch."""

    touched: list[np.ndarray]
    idx: np.ndarray
    lab: np.ndarray
    last: np.ndarray


def cohort_steps(epochs: list[list[tuple[np.ndarray, np.ndarray]]], batch: int,
                 local_rows: bool = True) -> CohortSteps:
    """Cut each device's epochs into mini-batches, padded across devices. Item ids become
    local row ids (into the device's touched rows) when ``local_rows``, i.e. when the item
    tables are trained as per-device row subsets; dense item tables keep global ids."""
    touched, per_dev = [], []
    for dev_epochs in epochs:
        t = np.unique(np.concatenate([it for it, _ in dev_epochs]))
        cut = [batch_steps(np.searchsorted(t, it) if local_rows else it, lab, batch)
               for it, lab in dev_epochs]
        last = np.zeros(sum(len(c[0]) for c in cut), dtype=bool)
        last[-len(cut[-1][0]):] = True
        per_dev.append((np.concatenate([c[0] for c in cut]), np.concatenate([c[1] for c in cut]), last))
        touched.append(t)
    U, S = len(epochs), max(len(p[0]) for p in per_dev)
    idx = np.full((U, S, batch), -1, dtype=np.int64)
    lab = np.zeros((U, S, batch), dtype=np.float32)
    last = np.zeros((U, S), dtype=bool)
    for u, (i, y, l) in enumerate(per_dev):
        idx[u, : len(i)], lab[u, : len(i)], last[u, : len(i)] = i, y, l
    return CohortSteps(touched, idx, lab, last)


def stack_params(model: RecModel, steps: CohortSteps, shared: dict[str, np.ndarray],
                 privates: list[dict[str, np.ndarray]], sparse: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Per-device parameter copies keyed ``inner.<name>``: sparse tables as [U, T, ...] local rows."""
    T = max(len(t) for t in steps.touched)
    out: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if name in sparse:
            table = np.zeros((len(privates), T, *shared[name].shape[1:]), dtype=np.float32)
            for u, t in enumerate(steps.touched):
                table[u, : len(t)] = shared[name][t]
            value = torch.from_numpy(table)
        elif name in privates[0]:
            value = torch.from_numpy(np.stack([pr[name] for pr in privates]).astype(np.float32))
        else:
            value = torch.from_numpy(np.asarray(shared[name], np.float32)).expand(len(privates), *p.shape).clone()
        out[f"inner.{name}"] = value.requires_grad_(True)
    return out


def _masked_bce(scorer: _Scorer, params, idx, y):
    m = (idx >= 0).to(y.dtype)                                    # [B]
    logits = functional_call(scorer, params, (idx.clamp(min=0),))  # [B]
    per = F.binary_cross_entropy_with_logits(logits, y, reduction="none") * m
    return per.sum() / m.sum().clamp(min=1.0), per.sum()


class CohortAdam:
    """torch.optim.Adam (defaults) on every device's parameter copy [U, ...] at once, with
    torch's own single-tensor update (lerp_, addcmul_, addcdiv_).

    A device whose step s is padding (it has fewer mini-batches) must not move: Adam would
    still step on its momentum, so only the ``act`` devices of a step are updated. Padding
    comes only after a device's last mini-batch (``cohort_steps``), so every device that moves
    at step s takes its (s+1)-th Adam step: one bias correction for all of them, exactly as a
    fresh torch Adam per device.
    """

    def __init__(self, params: dict[str, torch.Tensor], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.b1, self.b2, self.eps = betas[0], betas[1], eps
        self.m = {n: torch.zeros_like(p) for n, p in params.items()}   # first moments
        self.v = {n: torch.zeros_like(p) for n, p in params.items()}   # second moments

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
             lrs: dict[str, float], t: int, act: torch.Tensor | None) -> None:
        """Adam step ``t`` (1-based) of the ``act`` devices (None = all), in place: ``params``
        and ``grads`` hold those devices' rows [A, ...]."""
        bc1, bc2_sqrt = 1 - self.b1 ** t, (1 - self.b2 ** t) ** 0.5
        for n, g in grads.items():
            m, v = (self.m[n], self.v[n]) if act is None else (self.m[n][act], self.v[n][act])
            m.lerp_(g, 1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            params[n].addcdiv_(m, (v.sqrt() / bc2_sqrt).add_(self.eps), value=-lrs[n] / bc1)
            if act is not None:                   # m, v were gathered copies: scatter back
                self.m[n][act], self.v[n][act] = m, v


def train_cohort(model: RecModel, steps: CohortSteps, params: dict[str, torch.Tensor],
                 lrs: dict[str, float], optimizer: str = "sgd") -> np.ndarray:
    """SGD or Adam (``clients.trainer.train_local``'s) on every device's copy, in place.
    Each step computes and moves only the devices that have a mini-batch at that step.
    Returns last-epoch mean loss per device [U]."""
    scorer = _Scorer(model)
    step = vmap(lambda p, i, y: _masked_bce(scorer, p, i, y))
    idx_all, lab_all = torch.from_numpy(steps.idx), torch.from_numpy(steps.lab)
    U, S, _ = idx_all.shape
    loss_sum = torch.zeros(U, dtype=torch.float64)
    names = list(params)
    step_lrs = {n: lrs[n.removeprefix("inner.")] for n in names}
    adam = CohortAdam(params) if optimizer == "adam" else None
    active = torch.from_numpy(steps.idx[:, :, 0] >= 0)                     # [U, S]
    last = torch.from_numpy(steps.last)                                    # [U, S]
    for s in range(S):
        found = active[:, s].nonzero().squeeze(1)                          # [A]
        act: torch.Tensor | None = None        # None: every device is active
        rows: slice | torch.Tensor = slice(None)
        sub = params
        if len(found) < U:                     # the rest pad: train a copy of the active rows
            act = rows = found
            sub = {n: p[found].detach().requires_grad_(True) for n, p in params.items()}
        mean_loss, sum_loss = step(sub, idx_all[rows, s], lab_all[rows, s])  # [A], [A]
        grads = torch.autograd.grad(mean_loss.sum(), [sub[n] for n in names])
        if adam is not None:
            adam.step(sub, dict(zip(names, grads, strict=True)), step_lrs, s + 1, act)
        else:
            with torch.no_grad():
                for n, g in zip(names, grads, strict=True):
                    sub[n].sub_(step_lrs[n] * g)
        if act is not None:
            with torch.no_grad():
                for n in names:
                    params[n][act] = sub[n]
        loss_sum[rows] += torch.where(last[rows, s], sum_loss.detach().double(), 0.0)
    n_last = torch.from_numpy(((steps.idx >= 0) & steps.last[..., None]).sum((1, 2))).double()
    return (loss_sum / n_last.clamp(min=1)).numpy()
