"""CoDA's training and scoring math for D devices at once (per-device parameters stacked on a
leading axis, ``torch.func.vmap``), and the cloud's global-model training.

Devices never interact: every loss, gradient, step and acceptance decision of device i reads
only row i, so a cohort gives each device what it gets alone (tests/coda/test_train.py).

Shapes: D devices, N samples per device (padded), S steps, B mini-batch, V validation
samples, L history length, T item rows per device (its touched items, padded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from fedrec.coda.data import Block
from fedrec.coda.model import Params, classifier_logits, ctr_logits

Inputs = dict[str, torch.Tensor]
Logits = Callable[[Params, Inputs], torch.Tensor]
FEATURES = ("hist", "hcat", "hmask", "item", "cat")


def inputs(block: Block, rows: np.ndarray, cats: np.ndarray) -> dict[str, np.ndarray]:
    """A block's model inputs with items as rows of a device's table: ``rows`` = the sorted
    item ids that table holds (every item of the block must be there), ``cats`` [I] the
    catalogue's category codes. -> hist/hcat/item/cat int64, hmask/label float32."""
    real = block.hist >= 0                                                    # [n, L]
    hist_ids = np.where(real, block.hist, block.item[:, None] if len(block) else 0)
    local = np.searchsorted(rows, hist_ids)
    return {"hist": np.where(real, local, 0).astype(np.int64),
            "hcat": np.where(real, cats[np.maximum(block.hist, 0)], 0).astype(np.int64),
            "hmask": real.astype(np.float32),
            "item": np.searchsorted(rows, block.item).astype(np.int64),
            "cat": cats[block.item].astype(np.int64),
            "label": block.label.astype(np.float32)}


def pad_stack(per_device: list[dict[str, np.ndarray]]) -> tuple[Inputs, torch.Tensor]:
    """Per-device input dicts (n_i samples each) -> tensors [D, N, ...] and mask [D, N]."""
    n = max((len(d["item"]) for d in per_device), default=0)
    n = max(n, 1)
    out: Inputs = {}
    for key in (*FEATURES, "label"):
        first = per_device[0][key]
        arr = np.zeros((len(per_device), n, *first.shape[1:]), first.dtype)
        for i, d in enumerate(per_device):
            arr[i, :len(d[key])] = d[key]
        out[key] = torch.from_numpy(arr)
    mask = np.zeros((len(per_device), n), np.float32)
    for i, d in enumerate(per_device):
        mask[i, :len(d["item"])] = 1.0
    return out, torch.from_numpy(mask)


def gather(data: Inputs, idx: torch.Tensor) -> Inputs:
    """Rows ``idx`` [D, B] (>= 0) of each device's padded inputs."""
    d = torch.arange(idx.shape[0])[:, None]
    return {k: v[d, idx] for k, v in data.items()}


def masked_bce(logits: torch.Tensor, label: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE over the real rows; logits/label [B, ...], mask [B] (or of their shape)."""
    per = F.binary_cross_entropy_with_logits(logits, label, reduction="none")
    m = mask.reshape(*mask.shape, *(1,) * (per.dim() - mask.dim())).expand_as(per)
    return (per * m).sum() / m.sum().clamp(min=1.0)


def _loss(fn: Logits) -> Callable[[Params, Inputs, torch.Tensor, torch.Tensor], torch.Tensor]:
    return lambda p, x, y, m: masked_bce(fn(p, x), y, m)


def stack(params: list[Params]) -> Params:
    """Per-device parameter dicts of equal shapes -> one dict of [D, ...] tensors."""
    return {k: torch.stack([p[k] for p in params]) for k in params[0]}


def unstack(params: Params, i: int) -> Params:
    return {k: v[i] for k, v in params.items()}


def schedule(sizes: list[int], batch: int, rngs: list[np.random.Generator],
             epochs: int = 1) -> torch.Tensor:
    """Each device's shuffled mini-batches of its ``sizes[i]`` samples, ``epochs`` passes,
    padded to [D, S, B] with -1 (a device's own rng shuffles it)."""
    per = []
    for n, rng in zip(sizes, rngs, strict=True):
        order = np.concatenate([rng.permutation(n) for _ in range(epochs)]) if n else np.zeros(0)
        per.append([order[i:i + batch] for i in range(0, len(order), batch)])
    return pad_steps(per, batch)


def pad_steps(steps: list[list[np.ndarray]], batch: int) -> torch.Tensor:
    """Per-device lists of mini-batches (row ids) -> [D, S, B] padded with -1."""
    s = max((len(x) for x in steps), default=0)
    out = np.full((len(steps), s, batch), -1, np.int64)
    for i, per in enumerate(steps):
        for j, b in enumerate(per):
            out[i, j, :len(b)] = b
    return torch.from_numpy(out)


def adam_fit(params: Params, fn: Logits, data: Inputs, steps: torch.Tensor, lr: float,
             b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
             features: tuple[str, ...] = FEATURES, l2: float = 0.0) -> Params:
    """Mini-batch Adam for every device at once (per-device step counts); a device without a
    batch at step s is left as it is. steps [D, S, B] rows into ``data`` (-1 pad); ``fn``
    reads ``features`` of ``data`` (``data["label"]`` is the target, [D, N] or [D, N, C]);
    ``l2``: weight decay added to the gradient (torch.optim.Adam's)."""
    p = {k: v.clone() for k, v in params.items()}
    m = {k: torch.zeros_like(v) for k, v in p.items()}
    v2 = {k: torch.zeros_like(v) for k, v in p.items()}
    t = torch.zeros(steps.shape[0])
    per_device_grad = vmap(grad(_loss(fn)))
    for s in range(steps.shape[1]):
        idx = steps[:, s]
        mask = (idx >= 0).float()                                             # [D, B]
        active = mask.sum(1) > 0                                              # [D]
        if not bool(active.any()):
            continue
        x = gather(data, idx.clamp(min=0))
        g = per_device_grad(p, {k: x[k] for k in features}, x["label"], mask)
        t = t + active.float()
        for k in list(p):
            if l2:
                g[k] = g[k] + l2 * p[k]
            shape = (-1,) + (1,) * (p[k].dim() - 1)
            on = active.view(shape)
            m[k] = torch.where(on, b1 * m[k] + (1 - b1) * g[k], m[k])
            v2[k] = torch.where(on, b2 * v2[k] + (1 - b2) * g[k] ** 2, v2[k])
            tt = t.clamp(min=1).view(shape)
            step = lr * (m[k] / (1 - b1 ** tt)) / ((v2[k] / (1 - b2 ** tt)).sqrt() + eps)
            p[k] = torch.where(on, p[k] - step, p[k])
    return p


def auc_rows(scores: torch.Tensor, label: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row AUC (ties count half) of scores [D, V] over the masked samples; NaN where a row
    lacks a class. -> float64 [D]"""
    pos = (label > 0.5) & (mask > 0)
    neg = (label < 0.5) & (mask > 0)
    gt = (scores[:, :, None] > scores[:, None, :]).double()
    eq = (scores[:, :, None] == scores[:, None, :]).double()
    pair = (pos[:, :, None] & neg[:, None, :]).double()                      # [D, V, V]
    den = pair.sum((1, 2))
    num = ((gt + 0.5 * eq) * pair).sum((1, 2))
    return torch.where(den > 0, num / den.clamp(min=1), torch.full_like(den, float("nan")))


def criterion(scores: torch.Tensor, label: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Algorithm 3's validation score, higher is better: AUC where the validation samples
    hold both classes, else minus the log-loss. -> float64 [D]"""
    auc = auc_rows(scores, label, mask)
    per = F.binary_cross_entropy_with_logits(scores, label, reduction="none").double()
    loss = (per * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.where(torch.isnan(auc), -loss, auc)


@dataclass
class GreedyStats:
    """Per device: steps kept / rejected, and whether the validation score improved at all
    (no: the buffered model is rolled back). int64 / bool [D]"""

    accepted: np.ndarray
    rejected: np.ndarray
    improved: np.ndarray
    start: np.ndarray
    end: np.ndarray


def greedy_fit(params: Params, data: Inputs, steps: torch.Tensor, valid: Inputs,
               vmask: torch.Tensor, lr: float, accept: bool) -> tuple[Params, GreedyStats]:
    """Algorithm 3 for every device at once: per mini-batch one SGD step; the step is kept
    only if the local validation criterion strictly improves (``accept``; else always kept).
    steps [D, S, B] rows into ``data`` (-1 pad); valid [D, V] with mask ``vmask``."""
    p = dict(params)
    score = vmap(ctr_logits)
    vx = {k: valid[k] for k in FEATURES}
    crit = criterion(score(p, vx), valid["label"], vmask)
    start = crit.clone()
    per_device_grad = vmap(grad(_loss(ctr_logits)))
    kept = torch.zeros(steps.shape[0], dtype=torch.long)
    dropped = torch.zeros_like(kept)
    for s in range(steps.shape[1]):
        idx = steps[:, s]
        mask = (idx >= 0).float()
        active = mask.sum(1) > 0
        if not bool(active.any()):
            continue
        x = gather(data, idx.clamp(min=0))
        g = per_device_grad(p, {k: x[k] for k in FEATURES}, x["label"], mask)
        new = {k: p[k] - lr * g[k] for k in p}
        if accept:
            new_crit = criterion(score(new, vx), valid["label"], vmask)
            ok = active & (new_crit > crit)
            crit = torch.where(ok, new_crit, crit)
        else:
            ok = active
        for k, v in new.items():
            p[k] = torch.where(ok.view((-1,) + (1,) * (v.dim() - 1)), v, p[k])
        kept += ok.long()
        dropped += (active & ~ok).long()
    if not accept:
        crit = criterion(score(p, vx), valid["label"], vmask)
    return p, GreedyStats(kept.numpy(), dropped.numpy(), (crit > start).numpy(),
                          start.numpy(), crit.numpy())


def classifier_scores(params: Params, data: Inputs) -> torch.Tensor:
    """P(looks local) [D, N]."""
    with torch.no_grad():
        return torch.sigmoid(vmap(classifier_logits)(params, {k: data[k] for k in FEATURES}))


def ctr_scores(params: Params, data: Inputs) -> torch.Tensor:
    """Click logits [D, N]."""
    with torch.no_grad():
        return vmap(ctr_logits)(params, {k: data[k] for k in FEATURES})


def ctr_scores_chunked(params: Params, per_device: list[dict[str, np.ndarray]],
                       chunk: int = 256) -> list[np.ndarray]:
    """Click logits of each device's samples with its own row of the stacked ``params``,
    ``chunk`` samples of every device at a time (memory bounded by D x chunk, whatever the
    largest device's day). -> float32 [n_i] per device"""
    n = [len(d["item"]) for d in per_device]
    out = [np.zeros(k, np.float32) for k in n]
    for lo in range(0, max(n, default=0), chunk):
        act = [i for i, k in enumerate(n) if k > lo]
        x, _ = pad_stack([{key: v[lo:lo + chunk] for key, v in per_device[i].items()} for i in act])
        sel = torch.tensor(act, dtype=torch.long)
        got = ctr_scores({k: v[sel] for k, v in params.items()}, x).numpy()
        for j, i in enumerate(act):
            m = min(chunk, n[i] - lo)
            out[i][lo:lo + m] = got[j, :m]
    return out


def train_global(params: Params, block: Block, cats: np.ndarray, epochs: int, lr: float,
                 batch: int, seed: int, progress: Callable[[str], None] | None = None
                 ) -> tuple[Params, list[float]]:
    """The cloud's global CTR model: Adam on every pool sample (BCE), ``epochs`` shuffled
    passes. Item rows are the global ids. -> (params, mean loss per epoch)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # multi-threaded embedding-gradient sums are not reproducible
    try:
        return _train_global(params, block, cats, epochs, lr, batch, seed, progress)
    finally:
        torch.set_num_threads(threads)


def _train_global(params: Params, block: Block, cats: np.ndarray, epochs: int, lr: float,
                  batch: int, seed: int, progress: Callable[[str], None] | None
                  ) -> tuple[Params, list[float]]:
    n_items = params["item"].shape[0]
    x = {k: torch.from_numpy(v) for k, v in inputs(block, np.arange(n_items), cats).items()}
    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.Adam(list(p.values()), lr=lr)
    rng = np.random.default_rng([seed, 41])
    losses = []
    for e in range(epochs):
        order = torch.from_numpy(rng.permutation(len(block)))
        total = 0.0
        for i in range(0, len(order), batch):
            b = order[i:i + batch]
            loss = F.binary_cross_entropy_with_logits(
                ctr_logits(p, {k: x[k][b] for k in FEATURES}), x["label"][b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        losses.append(total / max(len(block), 1))
        if progress:
            progress(f"epoch {e + 1}/{epochs} loss {losses[-1]:.4f}")
    return {k: v.detach() for k, v in p.items()}, losses
