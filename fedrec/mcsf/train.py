"""MC-SF's training and scoring loops: centralised Adam over event batches (the cloud's slow
model, the paper's centralised fast training and every baseline), and the cohort's fast fit
as one stacked computation (``fedrec.coda.train.adam_fit``: per-device copies, vmap).

Every model here is a function ``logits(idx) -> [b, C]`` over rows ``idx`` of an event set;
training minimises the mean BCE of those logits against the events' labels with Adam
(``weight_decay`` = the L2 weight), ``batch`` events per step, a seeded shuffle per epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from fedrec.coda.train import adam_fit
from fedrec.mcsf.data import Events
from fedrec.mcsf.model import Params, Shape, fast_logits, s2f_features, slow_logits
from fedrec.metrics import full_ranking_ranks, ranks_from_scores

Tensors = dict[str, torch.Tensor]
LogitsFn = Callable[[torch.Tensor], torch.Tensor]
#: a model at evaluation: rows of an event set (EVAL_KEYS) -> logits [b, C]
Scorer = Callable[[Tensors], torch.Tensor]
SLOW_KEYS = ("slow", "cand", "mem")
FAST_KEYS = ("clicks", "expo", "cand", "rc", "re")
EVAL_KEYS = ("owner", "slow", "clicks", "expo", "cand", "mem")


def as_tensors(ev: Events, memory: torch.Tensor | None, dim: int) -> Tensors:
    """An event set as tensors; ``mem`` becomes each event's memory vector [E, d] (zero where
    the event has none; ``memory`` [M, d] indexed by ``ev.mem``)."""
    t = {k: torch.from_numpy(np.ascontiguousarray(getattr(ev, k)))
         for k in ("owner", "slow", "clicks", "expo", "cand", "label")}
    idx = torch.from_numpy(ev.mem)
    if memory is None or len(memory) == 0:
        t["mem"] = torch.zeros(len(ev), dim)
    else:
        t["mem"] = torch.where((idx >= 0)[:, None], memory[idx.clamp(min=0)], 0.0)
    return t


def rows(t: Tensors, idx: torch.Tensor, keys: Sequence[str]) -> Tensors:
    return {k: t[k][idx] for k in keys if k in t}


def with_s2f(t: Tensors, slow: Params, shape: Shape, chunk: int = 512) -> Tensors:
    """``t`` plus the cloud's S2F features rc, re [E, C, d] for every candidate (computed
    with the slow model ``slow``, in chunks of events)."""
    rc, re = [], []
    for lo in range(0, len(t["cand"]), chunk):
        idx = torch.arange(lo, min(lo + chunk, len(t["cand"])))
        a, b = s2f_features(slow, shape, rows(t, idx, SLOW_KEYS))
        rc.append(a)
        re.append(b)
    d = shape.dim
    empty = torch.zeros(0, t["cand"].shape[1], d)
    return {**t, "rc": torch.cat([empty, *rc]), "re": torch.cat([empty, *re])}


def slow_fn(p: Params, shape: Shape, t: Tensors) -> LogitsFn:
    return lambda idx: slow_logits(p, shape, rows(t, idx, SLOW_KEYS))


def fast_fn(p: Params, shape: Shape, t: Tensors, table: torch.Tensor) -> LogitsFn:
    """The fast model's logits; its own item table ``p["table"]`` where it tunes one."""
    return lambda idx: fast_logits(p, shape, rows(t, idx, FAST_KEYS), p.get("table", table))


def adam_train(params: Sequence[torch.Tensor], logits: LogitsFn, label: torch.Tensor, *,
               epochs: int, batch: int, lr: float, l2: float, seed: int,
               progress: Callable[[str], None] | None = None, what: str = "") -> list[float]:
    """Mean BCE of ``logits`` against ``label`` [E, C], Adam; returns each epoch's mean loss."""
    params = list(params)
    for q in params:
        q.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=l2)
    losses: list[float] = []
    n = len(label)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        total = 0.0
        for lo in range(0, n, batch):
            idx = order[lo:lo + batch]
            loss = F.binary_cross_entropy_with_logits(logits(idx), label[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / max(n, 1))
        if progress is not None:
            progress(f"{what} epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f} "
                     f"({time.perf_counter() - t0:.1f} s)")
    for q in params:
        q.requires_grad_(False)
    return losses


@torch.no_grad()
def scores(logits: LogitsFn, n: int, chunk: int = 64) -> np.ndarray:
    """Logits of every event's candidates, in chunks. -> float32 [n, C]"""
    out = [logits(torch.arange(lo, min(lo + chunk, n))) for lo in range(0, n, chunk)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def test_ranks(logits: LogitsFn, n: int) -> np.ndarray:
    """0-based pessimistic rank of column 0 (the target) among each event's candidates. [n]"""
    return ranks_from_scores(scores(logits, n), 0)


def sampled_ranks(score: Scorer, t: Tensors) -> np.ndarray:
    """``test_ranks`` of a scorer over the event set ``t``. [E]"""
    return test_ranks(lambda idx: score(rows(t, idx, EVAL_KEYS)), len(t["cand"]))


def slow_scorer(p: Params, shape: Shape) -> Scorer:
    return lambda x: slow_logits(p, shape, x)


def fast_scorer(p: Params, shape: Shape, table: torch.Tensor,
                slow: tuple[Params, Shape] | None = None) -> Scorer:
    """The fast model at evaluation; with ``slow`` (S2F) the cloud's r_c, r_e of each
    candidate are computed from that slow model on the way (as ``with_s2f``)."""
    def score(x: Tensors) -> torch.Tensor:
        if slow is not None:
            rc, re = s2f_features(slow[0], slow[1], x)
            x = {**x, "rc": rc, "re": re}
        return fast_logits(p, shape, x, p.get("table", table))
    return score


@torch.no_grad()
def full_ranks(score: Scorer, t: Tensors, n_items: int, exclude: sp.csr_matrix,
               chunk: int = 8) -> np.ndarray:
    """0-based pessimistic rank of each event's target (``t["cand"][:, 0]``) among all
    ``n_items`` items, ``exclude`` [E, I] (the device's seen items) scored -inf; ``chunk``
    events at a time, each with every item as a candidate. -> int64 [E]"""
    n = len(t["cand"])
    target = t["cand"][:, 0].numpy()
    every = torch.arange(n_items)
    out = [np.empty(0, np.int64)]
    for lo in range(0, n, chunk):
        idx = torch.arange(lo, min(lo + chunk, n))
        x = {**rows(t, idx, EVAL_KEYS), "cand": every.expand(len(idx), n_items)}
        out.append(full_ranking_ranks(score(x).numpy(), target[lo:lo + len(idx)],
                                      exclude[lo:lo + len(idx)]))
    return np.concatenate(out)


# ---------------------------------------------------------------------- the cohort's fit
def fit_stacked(stacked: Params, shape: Shape, data: Tensors, steps: torch.Tensor,
                table: torch.Tensor, lr: float, l2: float) -> Params:
    """Every device of a cohort trains its own copy of the fast parameters (``stacked``
    [D, ...]: each device's start) on its own events: data [D, N, ...] (padded), steps
    [D, S, B] rows (-1 pad). -> [D, ...] params"""
    keys = tuple(k for k in FAST_KEYS if k in data)
    return adam_fit(stacked, lambda p, x: fast_logits(p, shape, x, table), data, steps, lr,
                    features=keys, l2=l2)


def pad_devices(per: list[Tensors]) -> Tensors:
    """Per-device tensors (n_i events each) -> [D, N, ...] zero-padded (PAD ids stay -1)."""
    n = max(max((len(t["cand"]) for t in per), default=0), 1)
    out: Tensors = {}
    for key in per[0]:
        first = per[0][key]
        fill = -1 if key in ("slow", "clicks", "expo") else 0
        arr = torch.full((len(per), n, *first.shape[1:]), fill, dtype=first.dtype)
        for i, t in enumerate(per):
            arr[i, :len(t[key])] = t[key]
        out[key] = arr
    return out


@torch.no_grad()
def stacked_loss(stacked: Params, shape: Shape, data: Tensors, table: torch.Tensor) -> np.ndarray:
    """Each device's mean BCE over its real events after training. -> float64 [D]"""
    keys = tuple(k for k in FAST_KEYS if k in data)
    logits = torch.func.vmap(lambda p, x: fast_logits(p, shape, x, table))(
        stacked, {k: data[k] for k in keys})                                  # [D, N, C]
    per = F.binary_cross_entropy_with_logits(logits, data["label"], reduction="none").mean(-1)
    real = (data["cand"] >= 0).all(-1) & (data["label"].sum(-1) > 0)           # [D, N]
    return ((per * real).sum(1) / real.sum(1).clamp(min=1)).double().numpy()
