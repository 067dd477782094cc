"""GRU4Rec training and next-click evaluation on click sessions, with C3DRec's sparsity.

Training (cloud and device): sessions are cut into pieces of at most ``max_len`` transitions
(consecutive pieces share one item, so every transition is a target exactly once, and the
GRU state restarts at each piece); pieces are packed into mini-batches of at most
``batch_events`` targets (the device's *update interval*, Fig. 9) and the loss is the
next-click cross-entropy over all items at every step (GRU4Rec / C3DRec), plus Eq. 3's
``lasso * L1`` of the embedding that travels:

* ``pull``: the item embeddings (output rows, ``model.item_embeddings()``) pass the sparse
  layer ``|v| > gamma``; L1 = mean over items of the row sum;
* ``push``: the user embedding (GRU state) passes it; L1 = mean over steps of the row sum.

AGP masks (``fedrec.c3drec.agp``) are applied to gradients and weights at every step. The
cloud can ramp gamma to a target embedding sparsity on the AGP grid (``GammaPlan``).

Evaluation (Sec. 4.2): every click after the first of a test session is a target; the user
embedding is the GRU state after the (at most ``max_len``) previous clicks of that session.
Recall@K (one target: hit or miss) and MRR@K come from top-K lists, over the candidate set
or over all items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fedrec.c3drec.agp import AGPSchedule, Masks, agp_sparsity, apply_masks, mask_gradients, prune
from fedrec.c3drec.sparsify import calibrate_gamma
from fedrec.evaluation import ranks_from_topk
from fedrec.metrics import hit_rate, mrr, topk_items
from fedrec.models.base import PAD, Batch
from fedrec.models.common import embed_history
from fedrec.models.gru4rec import GRU4Rec, hard_threshold

MODES = ("pull", "push", "none")


@dataclass(frozen=True)
class SparseSpec:
    """Which embedding travels (``mode``) and Eq. 3's threshold ``gamma`` and weight ``lasso``."""

    mode: str = "none"
    gamma: float = 0.0
    lasso: float = 0.0


@dataclass(frozen=True)
class TrainSpec:
    """Optimisation: Adagrad (the paper's optimiser) over the ``trainable`` parameter-name
    prefixes (``()`` = all), ``epochs`` passes over the sessions. ``negatives`` > 0: the
    softmax of a step runs over the batch's targets plus that many items drawn uniformly,
    shared by the batch (GRU4Rec's mini-batch + additional samples); 0 = over all items.
    ``own_rows``: item tables ([n_items, d]) of which only the rows of items in the training
    sessions learn (a device's own items)."""

    epochs: int = 1
    batch_events: int = 50
    lr: float = 0.05
    max_len: int = 20
    trainable: tuple[str, ...] = ()
    negatives: int = 0
    own_rows: tuple[str, ...] = ()


@dataclass(frozen=True)
class GammaPlan:
    """Ramp gamma so the travelling embedding reaches sparsity ``schedule.final`` (Eq. 4 grid)."""

    schedule: AGPSchedule
    sample: int = 50_000   # |u| values kept to calibrate the user-embedding threshold (push)


@dataclass
class TrainResult:
    loss: float = float("nan")   # mean loss of the last epoch
    events: int = 0              # targets seen (all epochs)
    steps: int = 0
    masks: Masks = field(default_factory=dict)
    gamma: float = 0.0


def make_model(n_items: int, embedding_dim: int, hidden_dim: int, seed: int) -> GRU4Rec:
    """C3DRec's recommendation model: one GRU layer, no output bias (scores = u . v)."""
    return GRU4Rec(n_items=n_items, embedding_dim=embedding_dim, hidden_dim=hidden_dim,
                   sparse="none", seed=seed)


def pieces(sessions: Sequence[np.ndarray], max_len: int) -> list[np.ndarray]:
    """Cut sessions into pieces of <= max_len transitions sharing one item at each cut."""
    out = []
    for s in sessions:
        for lo in range(0, max(len(s) - 1, 0), max_len):
            out.append(s[lo:lo + max_len + 1])
    return out


def pack(lengths: np.ndarray, batch_events: int, order: np.ndarray) -> list[np.ndarray]:
    """Group piece indices (in ``order``) into batches of <= batch_events targets (len - 1)."""
    batches: list[np.ndarray] = []
    cur: list[int] = []
    n = 0
    for i in order:
        t = int(lengths[i]) - 1
        if cur and n + t > batch_events:
            batches.append(np.array(cur))
            cur, n = [], 0
        cur.append(i)
        n += t
    if cur:
        batches.append(np.array(cur))
    return batches


def pad_pieces(batch: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded inputs and targets, both LongTensor [B, T] with PAD where empty."""
    T = max(len(p) for p in batch) - 1
    inp = np.full((len(batch), T), PAD, np.int64)
    tgt = np.full((len(batch), T), PAD, np.int64)
    for r, p in enumerate(batch):
        inp[r, :len(p) - 1] = p[:-1]
        tgt[r, :len(p) - 1] = p[1:]
    return torch.from_numpy(inp), torch.from_numpy(tgt)


def step_states(model: GRU4Rec, inp: torch.Tensor) -> torch.Tensor:
    """GRU state after every prefix of right-padded ``inp`` [B, T] -> [B, T, H]; at a valid
    position it equals ``model.user_embedding`` of that prefix (PADs come only after it)."""
    x, _ = embed_history(model.item_emb, inp)
    states, _ = model.gru(x)
    return states


def travelling(model: GRU4Rec, u: torch.Tensor,
               spec: SparseSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(user embeddings, item embeddings, L1 term) after the sparse layer of ``spec.mode``."""
    v = model.item_embeddings()
    l1 = u.new_zeros(())
    if spec.mode == "push":
        u = hard_threshold(u, spec.gamma)
        l1 = u.abs().sum() / max(len(u), 1)
    elif spec.mode == "pull":
        v = hard_threshold(v, spec.gamma)
        if v.requires_grad:      # a frozen item table (device) makes the term a constant
            l1 = v.abs().sum() / v.shape[0]
    return u, v, l1


def batch_loss(model: GRU4Rec, inp: torch.Tensor, tgt: torch.Tensor, spec: SparseSpec,
               negatives: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-click cross-entropy + lasso * L1, and the raw user embeddings [n, H].

    ``negatives`` (item ids): softmax over ``unique(targets, negatives)`` instead of all items.
    """
    valid = tgt != PAD
    raw = step_states(model, inp)[valid]                              # [n, H]
    u, v, l1 = travelling(model, raw, spec)
    y = tgt[valid]
    if negatives is not None:
        cols = torch.unique(torch.cat([y, negatives]))                # sorted [C]
        v, y = v[cols], torch.searchsorted(cols, y)
    ce = F.cross_entropy(u @ v.T, y)
    return ce + spec.lasso * l1 if spec.mode != "none" else ce, raw


def _optimizer(model: GRU4Rec, spec: TrainSpec) -> torch.optim.Optimizer:
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(not spec.trainable or name.startswith(spec.trainable))
        if p.requires_grad:
            params.append(p)
    return torch.optim.Adagrad(params, lr=spec.lr)


def train(model: GRU4Rec, sessions: Sequence[np.ndarray], spec: TrainSpec, sparse: SparseSpec,
          rng: np.random.Generator, masks: Masks | None = None, agp: AGPSchedule | None = None,
          prune_names: Sequence[str] = (), gamma_plan: GammaPlan | None = None) -> TrainResult:
    """Train ``model`` in place; returns loss, counts, final masks and final gamma.

    ``agp``: prune ``prune_names`` on the Eq. 4 grid (cloud); the final sparsity is enforced
    after the last epoch even if the grid ends later. ``gamma_plan``: recalibrate
    ``sparse.gamma`` on its grid and at the end (cloud). Without them masks and gamma stay
    fixed (device).
    """
    res = TrainResult(masks=dict(masks or {}), gamma=sparse.gamma)
    ps = pieces(sessions, min(spec.max_len, spec.batch_events))
    if not ps:
        return res
    lengths = np.array([len(p) for p in ps])
    opt = _optimizer(model, spec)
    model.item_emb.sparse = True    # sparse row gradients: Adagrad touches only clicked rows
    res.masks = {n: m.float() for n, m in res.masks.items()}
    rows = _own_rows(model, sessions, spec.own_rows)
    sched = _Scheduler(model, sparse.mode, agp, prune_names, gamma_plan)
    for epoch in range(spec.epochs):
        batches = pack(lengths, spec.batch_events, rng.permutation(len(ps)))
        total, n = 0.0, 0
        for b, idx in enumerate(batches):
            sched.at(epoch + b / len(batches), res)
            inp, tgt = pad_pieces([ps[i] for i in idx])
            neg = (torch.from_numpy(rng.integers(0, model.n_items, spec.negatives))
                   if spec.negatives > 0 else None)
            step = SparseSpec(sparse.mode, res.gamma, sparse.lasso)
            loss, raw = batch_loss(model, inp, tgt, step, neg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            mask_gradients(model, rows)           # only the device's own item rows learn
            mask_gradients(model, res.masks)      # pruned weights take no part
            with torch.sparse.check_sparse_tensor_invariants(enable=False):  # torch's own grads
                opt.step()
            apply_masks(model, res.masks, trainable_only=True)
            sched.observe(raw)
            k = int((tgt != PAD).sum())
            total, n, res.steps = total + loss.item() * k, n + k, res.steps + 1
        res.loss, res.events = total / max(n, 1), res.events + n
    sched.finish(res)
    res.masks = {n: m.bool() for n, m in res.masks.items()}
    model.item_emb.sparse = False
    for p in model.parameters():
        p.requires_grad_(True)
    return res


def _own_rows(model: GRU4Rec, sessions: Sequence[np.ndarray], names: Sequence[str]) -> Masks:
    """Gradient masks [n_items, 1] that keep the rows of the items in ``sessions``."""
    params = dict(model.named_parameters())
    items = np.unique(np.concatenate([*sessions, np.zeros(0, np.int64)]))
    out = {}
    for n in names:
        m = torch.zeros(params[n].shape[0], 1)
        m[torch.from_numpy(items)] = 1.0
        out[n] = m
    return out


def _float(masks: Masks) -> Masks:
    return {n: m.float() for n, m in masks.items()}


class _Scheduler:
    """Acts once per Eq. 4 grid point reached: prune (AGP) and recalibrate gamma."""

    def __init__(self, model: GRU4Rec, mode: str, agp: AGPSchedule | None,
                 names: Sequence[str], plan: GammaPlan | None) -> None:
        self.model, self.mode, self.agp, self.names, self.plan = model, mode, agp, names, plan
        self.done = {"agp": -1, "gamma": -1}      # last grid index acted on
        self.seen: list[torch.Tensor] = []

    def at(self, t: float, res: TrainResult) -> None:
        if self.agp is not None and self.agp.final > 0 and self._new("agp", self.agp, t):
            res.masks = _float(prune(self.model, res.masks, agp_sparsity(t, self.agp), self.names))
        if self.plan is not None and self._new("gamma", self.plan.schedule, t):
            res.gamma = self._calibrate(agp_sparsity(t, self.plan.schedule))

    def _new(self, key: str, s: AGPSchedule, t: float) -> bool:
        k = min(s.steps, int(np.floor((t - s.start) / s.every + 1e-9))) if t >= s.start else -1
        fresh = k > self.done[key]
        self.done[key] = max(k, self.done[key])
        return fresh

    def observe(self, raw: torch.Tensor) -> None:
        if self.plan is not None and self.mode == "push":
            self.seen.append(raw.detach())
            while sum(x.numel() for x in self.seen) > self.plan.sample and len(self.seen) > 1:
                self.seen.pop(0)

    def finish(self, res: TrainResult) -> None:
        if self.agp is not None and self.agp.final > 0:
            res.masks = _float(prune(self.model, res.masks, self.agp.final, self.names))
        if self.plan is not None:
            res.gamma = self._calibrate(self.plan.schedule.final)

    def _calibrate(self, target: float) -> float:
        if self.mode == "pull":
            return calibrate_gamma(self.model.item_embeddings().detach().numpy(), target)
        if self.mode == "push" and self.seen:
            return calibrate_gamma(torch.cat(self.seen).numpy(), target)
        return 0.0


# --------------------------------------------------------------------------- evaluation
def next_click_events(sessions: Sequence[np.ndarray],
                      max_len: int) -> tuple[torch.Tensor, np.ndarray]:
    """Histories LongTensor [E, max_len] (left-padded) and targets int64 [E] of the sessions."""
    hist, tgt = [], []
    for s in sessions:
        for j in range(1, len(s)):
            h = s[max(0, j - max_len):j]
            hist.append(np.r_[np.full(max_len - len(h), PAD), h])
            tgt.append(s[j])
    if not hist:
        return torch.zeros((0, max_len), dtype=torch.long), np.zeros(0, np.int64)
    return torch.from_numpy(np.stack(hist).astype(np.int64)), np.asarray(tgt, np.int64)


@torch.no_grad()
def user_embeddings(model: GRU4Rec, hist: torch.Tensor, spec: SparseSpec) -> np.ndarray:
    """User embedding per history [E, H] after the push-mode sparse layer (if ``push``)."""
    u = model.user_embedding(Batch(history=hist))
    return (hard_threshold(u, spec.gamma) if spec.mode == "push" else u).numpy()


def topk_among(u: np.ndarray, item_emb: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """Top-k item ids [E, k] among ``candidates`` [C] by ``u [E, H] . item_emb [C, H]``.

    ``item_emb`` rows belong to ``candidates`` (same order). Ties: lower item id first.
    Fewer than k candidates: the rest of each row is -1.
    """
    scores = u @ item_emb.T                                           # [E, C]
    order = np.argsort(candidates, kind="stable")                     # ids ascending for ties
    top = topk_items(scores[:, order], min(k, len(candidates))) if len(candidates) else \
        np.zeros((len(u), 0), np.int64)
    ids = candidates[order][top]
    return np.pad(ids, ((0, 0), (0, k - ids.shape[1])), constant_values=-1)


def rank_metrics_topk(top: np.ndarray, targets: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per event: ``hit`` (target in top-k) and ``rr`` (1/(position+1), 0 if absent), the
    rank metrics of ``fedrec.evaluation.ranks_from_topk``."""
    ranks = ranks_from_topk(top[:, :k], targets)                      # [E], inf if absent
    return {"hit": hit_rate(ranks, k), "rr": mrr(ranks, k)}
