"""Centrally trained baselines of DCCL's Table 2 (MF, NeuMF, SASRec) on a sample view.

Yao et al., "Device-Cloud Collaborative Learning for Recommendation", KDD 2021, compare DCCL
with models trained in the cloud on every user's data. Here such a model trains on exactly
the view's training events (parts pre and device of every device) and is evaluated on the
view's own held-out events and candidates, so its numbers sit in the same table as DCCL's.

Training of MF, NeuMF and SASRec's ``"rows"`` objective: pointwise BCE with Adam on
each training click (label 1) and its ``negatives`` sampled items (label 0), scored in one
``model.score`` call per click (the user context, e.g. SASRec's pass over the history, is
computed once for the click and its negatives). Epoch 0 uses the view's own negatives; epoch
e > 0 draws fresh ones with ``resample_negatives(dev, n_items, negatives, view seed, e)``
(DCCL resamples each epoch; about 1.4 s per epoch on ML-1M, one call per device). MF and
NeuMF read the device id as the user; SASRec reads the history before the click
(``Samples.history``), one pass over up to ``history_len`` items per click.

SASRec's default ("positions", Kang & McAuley 2018, Sec. III-E): each device's training
sequence (its pre/device clicks in time order; valid/test events are never inputs or
targets) is cut into consecutive windows of ``max_len = history_len`` targets, aligned to the
end (the last window is the paper's last ``max_len + 1`` items; a short one comes first):
a window's input is its targets shifted back by one click, so every training click but the
device's first is a target exactly once, and the context of a click is the window's clicks
before it (not the full ``history_len`` of the rows objective). One causal pass per window
(``SASRec.sequence_logits``) scores, at every real slot, the next click and one negative:
the first of that click's negatives of the epoch (the view's at epoch 0, else
``resample_negatives(dev, n_items, 1, view seed, e)``; never an item the device touched).
Loss: mean BCE over the real slots' 2 logits, i.e. the paper's
``-log s(<s_t, e_pos>) - log(1 - s(<s_t, e_neg>))`` halved (Adam ignores the factor). A step
takes ``spec.sequences`` windows. As in the paper's code, a slot's positions count back from
the window's last input, so a state before the window's end is not the one ``score`` would
give the same prefix (there the last item sits at position 0). On ML-1M (DCCL view,
history_len 50: 22,434 windows, 977k targets; dim 50, one thread) an epoch takes about 17 s,
against about 465 s for the rows objective.

``spec.seed`` drives the initialisation, the shuffling and dropout. Torch's thread count is
left to the caller (on a busy 2-core machine one thread is several times faster).

Evaluation (no grad, eval mode): the test target's 0-based pessimistic rank among its
``1 + N`` candidates (``EvalSet.candidates``, target in column 0) and among every item with
the device's other pre/device items excluded (the target never is); the valid split's
sampled ranks too. ``eval-protocol = full`` draws no candidates: the sampled ranks are then
empty and only the full ranks are reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
import torch

from fedrec.errors import ConfigError
from fedrec.metrics import as_csr, full_ranking_ranks, rank_metrics, ranks_from_scores, summarise
from fedrec.models.base import PAD, Batch, RecModel
from fedrec.models.common import bce_loss
from fedrec.models.mf import MF
from fedrec.models.ncf import NeuMF
from fedrec.models.sasrec import SASRec
from fedrec.views.config import DEVICE, PRE
from fedrec.views.samples import NEGATIVE, POSITIVE, DeviceSamples, EvalSet, SampleView
from fedrec.views.samples import resample_negatives as draw_negatives

CENTRAL_MODELS: tuple[str, ...] = ("mf", "neumf", "sasrec")
SASREC_OBJECTIVES: tuple[str, ...] = ("positions", "rows")


@dataclass(frozen=True)
class CentralSpec:
    """One centrally trained baseline.

    model: ``mf`` (BCE, item bias), ``neumf`` (GMF size ``dim``, MLP ``(2 dim, dim, dim/2)``,
    so each MLP embedding is ``dim`` wide) or ``sasrec`` (``max_len`` = the view's history
    length). l2: Adam weight decay. device: the torch device that trains and scores.
    batch_size: rows per step of the rows objective (clicks times 1 + negatives) and per
    evaluation batch. sasrec_objective: ``positions`` (the paper's: every slot of a window
    predicts the next click, ``sequences`` windows per step) or ``rows`` (one row per click).
    """

    model: str
    dim: int = 32
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 1e-3
    l2: float = 0.0
    seed: int = 0
    # sasrec only
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    sasrec_objective: str = "positions"
    sequences: int = 128
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.model not in CENTRAL_MODELS:
            raise ConfigError(f"central model {self.model!r}; use one of {list(CENTRAL_MODELS)}")
        if self.sasrec_objective not in SASREC_OBJECTIVES:
            raise ConfigError(f"central sasrec_objective {self.sasrec_objective!r}; use one of "
                              f"{list(SASREC_OBJECTIVES)}")
        for name in ("dim", "epochs", "batch_size", "sequences"):
            if getattr(self, name) < 1:
                raise ConfigError(f"central {name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.l2 < 0:
            raise ConfigError(f"central lr must be > 0 and l2 >= 0, got {self.lr}, {self.l2}")


@dataclass(frozen=True)
class CentralResult:
    """Ranks (0-based, pessimistic ties) of one trained baseline; one row per test event.

    device_ids int [U]; sampled_ranks int [U] among the 1 + N test candidates; full_ranks
    int [U] among all items, the device's other pre/device items excluded;
    valid_sampled_ranks int [V] on the valid events. train_s: seconds of the training loop
    (negative resampling included, data gathering and evaluation not); epochs_loss: mean
    training loss of each epoch (per row, or per real slot for SASRec's positions); n_params: trainable parameters.
    """

    device_ids: np.ndarray
    sampled_ranks: np.ndarray
    full_ranks: np.ndarray
    valid_sampled_ranks: np.ndarray
    train_s: float
    epochs_loss: list[float]
    n_params: int


@dataclass(frozen=True, eq=False)
class TrainEvents:
    """Training clicks of every device: device, item int64 [E]; history int32 [E, L] (-1 at the
    end); negatives int64 [E, k] (the view's own); ``devs`` each device's ``DeviceSamples``
    without its samples and ``rows`` the indices of its training events in its sequence."""

    device: np.ndarray
    item: np.ndarray
    history: np.ndarray
    negatives: np.ndarray
    devs: list[DeviceSamples]
    rows: list[np.ndarray]


@dataclass(frozen=True, eq=False)
class HeldOut:
    """Held-out events of one split: device, target int64 [E]; candidates int64 [E, 1 + N]
    or None (full protocol); history int32 [E, L]; exclude csr [E, n_items]."""

    device: np.ndarray
    target: np.ndarray
    candidates: np.ndarray | None
    history: np.ndarray
    exclude: sp.csr_matrix


def gather_training(view: SampleView) -> TrainEvents:
    """Every device's pre/device clicks with the view's negatives, concatenated in device order."""
    k = view.cfg.negatives
    if k < 1:
        raise ConfigError("central training needs view-negatives >= 1 (BCE needs label-0 rows)")
    parts: list[tuple[np.ndarray, ...]] = []
    devs, rows = [], []
    for d in range(view.n_devices):
        dev = view.device(d)
        s = dev.samples
        train = (s.part == PRE) | (s.part == DEVICE)
        pos = s.select(train & (s.kind == POSITIVE))  # [E_d]
        neg = s.item[train & (s.kind == NEGATIVE)].reshape(-1, k)  # [E_d, k], grouped by event
        parts.append((np.full(len(pos), d, np.int64), pos.item, pos.history, neg))
        devs.append(replace(dev, samples=s.select(np.zeros(len(s), bool))))  # keep it light
        rows.append(pos.event)
    device, item, history, negatives = (np.concatenate(c) for c in zip(*parts, strict=True))
    return TrainEvents(device, item, history, negatives, devs, rows)


def epoch_negatives(view: SampleView, events: TrainEvents, epoch: int) -> np.ndarray:
    """Negatives of epoch ``epoch`` for every training event (0: the view's). -> int64 [E, k]"""
    if epoch == 0:
        return events.negatives
    k, seed = view.cfg.negatives, view.cfg.seed
    return np.concatenate([draw_negatives(dev, view.n_items, k, seed, epoch)[r]
                           for dev, r in zip(events.devs, events.rows, strict=True)])


def click_negatives(view: SampleView, events: TrainEvents, epoch: int) -> np.ndarray:
    """One negative per training event for epoch ``epoch``: the view's first at epoch 0, else
    ``resample_negatives(dev, n_items, 1, view seed, epoch)`` (with ``view-negatives = 1``
    the same as ``epoch_negatives``). -> int64 [E]"""
    if epoch == 0:
        return events.negatives[:, 0]
    seed = view.cfg.seed
    return np.concatenate([draw_negatives(dev, view.n_items, 1, seed, epoch)[r, 0]
                           for dev, r in zip(events.devs, events.rows, strict=True)])


def training_windows(device: np.ndarray, max_len: int) -> np.ndarray:
    """Input windows of the positions objective as event-row indices. -> int64 [S, max_len]

    ``device`` int [E] is each training event's device, grouped by device in time order (as
    ``gather_training`` gives). A device's events ``0..n-1`` give ``ceil((n - 1) / max_len)``
    windows of targets, consecutive and aligned to the end; a window's inputs are its targets'
    rows minus 1 (the click before each target), then -1. Targets are ``inputs + 1``.
    """
    if max_len < 1:
        raise ConfigError(f"training windows need max_len >= 1, got {max_len}")
    if len(device) and np.any(np.diff(device) < 0):
        raise ConfigError("training events must be grouped by device in ascending order")
    _, first, n = np.unique(device, return_index=True, return_counts=True)  # per device
    m = (np.maximum(n - 1, 0) + max_len - 1) // max_len  # windows per device
    owner = np.repeat(np.arange(len(n)), m)  # [S]
    rank = np.arange(len(owner)) - np.repeat(np.cumsum(m) - m, m)  # 0 = the device's oldest
    end = n[owner] - (m[owner] - 1 - rank) * max_len  # exclusive local end of the targets
    start = np.maximum(end - max_len, 1)  # first local target
    slot = np.arange(max_len)
    rows = (first[owner] + start - 1)[:, None] + slot  # [S, max_len] inputs: targets - 1
    return np.where(slot < (end - start)[:, None], rows, -1).astype(np.int64)


def positions_loss(model: SASRec, inputs: torch.Tensor, positives: torch.Tensor,
                   negatives: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean BCE of the next click (label 1) and one negative (label 0) at every real slot.

    inputs, positives, negatives LongTensor [B, W] (PAD = -1 at the end of ``inputs``; the
    others are ignored there). -> (loss, real slots); one causal pass over ``inputs``.
    """
    logits = model.sequence_logits(inputs, torch.stack([positives, negatives], dim=-1))
    real = inputs != PAD  # [B, W]
    pair = logits[real]  # [N, 2]
    labels = torch.zeros_like(pair)
    labels[:, 0] = 1.0
    return bce_loss(pair, labels), int(real.sum())


def held_out(devs: list[DeviceSamples], split: str, n_items: int) -> HeldOut:
    """The ``valid`` or ``test`` events of ``devs`` (all devices, in order) as one array set."""
    evs: list[EvalSet] = [getattr(dev, split) for dev in devs]
    device = np.concatenate([np.full(len(e.event), dev.device_id, np.int64)
                             for dev, e in zip(devs, evs, strict=True)])
    seen = [dev.items[dev.part <= DEVICE] for dev, e in zip(devs, evs, strict=True)
            for _ in range(len(e.event))]  # one exclusion row per held-out event
    sampled = all(e.negatives is not None for e in evs)
    return HeldOut(device, np.concatenate([e.target for e in evs]),
                   np.concatenate([e.candidates for e in evs]) if sampled else None,
                   np.concatenate([e.history for e in evs]), as_csr(seen, len(device), n_items))


def build_central(spec: CentralSpec, n_users: int, n_items: int, history_len: int) -> RecModel:
    """The baseline's model, initialised from ``spec.seed``."""
    if spec.model == "mf":
        return MF(n_users=n_users, n_items=n_items, dim=spec.dim, loss="bce", seed=spec.seed)
    if spec.model == "neumf":
        layers = (2 * spec.dim, spec.dim, max(spec.dim // 2, 1))
        return NeuMF(n_users=n_users, n_items=n_items, gmf_dim=spec.dim, mlp_layers=layers,
                     seed=spec.seed)
    return SASRec(n_items=n_items, dim=spec.dim, max_len=history_len, blocks=spec.blocks,
                  heads=spec.heads, dropout=spec.dropout, seed=spec.seed)


def make_batch(uses_history: bool, device: torch.Tensor, history: torch.Tensor,
               idx: torch.Tensor, dev: torch.device) -> Batch:
    """The user context of event rows ``idx`` [B]: device ids (MF, NeuMF) or histories."""
    if uses_history:
        return Batch(history=history[idx].to(dev, torch.long))  # [B, L]
    return Batch(users=device[idx].to(dev))  # [B]


def train_epoch(model: RecModel, opt: torch.optim.Optimizer, data: tuple[torch.Tensor, ...],
                negatives: np.ndarray, spec: CentralSpec, epoch: int) -> float:
    """One shuffled pass over every click and its negatives; returns the mean BCE.

    A step takes ``batch_size // (1 + k)`` clicks with their ``k`` negatives (about
    ``batch_size`` rows); a click and its negatives share one pass of the user context.
    """
    device, item, history = data
    E, k = negatives.shape
    cand = torch.cat([item.unsqueeze(1), torch.from_numpy(negatives)], dim=1)  # [E, 1 + k]
    label = torch.zeros(1 + k, device=spec.device)
    label[0] = 1.0
    gen = torch.Generator().manual_seed(spec.seed * 1_000_003 + epoch)
    order = torch.randperm(E, generator=gen)
    per = max(1, spec.batch_size // (1 + k))
    dev, uses_history = torch.device(spec.device), spec.model == "sasrec"
    model.train()
    total = 0.0
    for lo in range(0, E, per):
        idx = order[lo : lo + per]
        logits = model.score(make_batch(uses_history, device, history, idx, dev),
                             cand[idx].to(dev))  # [b, 1 + k]
        loss = bce_loss(logits, label.expand_as(logits))
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total / E


def train_positions_epoch(model: SASRec, opt: torch.optim.Optimizer, item: torch.Tensor,
                          windows: torch.Tensor, negatives: np.ndarray, spec: CentralSpec,
                          epoch: int) -> float:
    """One shuffled pass over the windows (``spec.sequences`` per step); mean BCE per slot.

    item LongTensor [E] training clicks; windows LongTensor [S, W] input rows (-1 pad);
    negatives int64 [E] one per click (the target's).
    """
    neg = torch.from_numpy(negatives)
    gen = torch.Generator().manual_seed(spec.seed * 1_000_003 + epoch)
    order = torch.randperm(len(windows), generator=gen)
    dev = torch.device(spec.device)
    model.train()
    total, slots = 0.0, 0
    for lo in range(0, len(windows), spec.sequences):
        rows = windows[order[lo : lo + spec.sequences]]  # [b, W]
        real = rows >= 0
        w = max(1, int(real.sum(dim=1).max()))  # trim the common end padding
        rows, real = rows[:, :w], real[:, :w]
        nxt = torch.where(real, rows + 1, 0)  # target rows
        inputs = torch.where(real, item[rows.clamp(min=0)], PAD)
        loss, n = positions_loss(model, inputs.to(dev), item[nxt].to(dev), neg[nxt].to(dev))
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * n
        slots += n
    return total / max(slots, 1)


@torch.no_grad()
def eval_ranks(model: RecModel, split: HeldOut, spec: CentralSpec,
               full: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sampled ranks [E] (empty without candidates) and, if ``full``, full ranks [E]."""
    model.eval()
    dev, uses_history = torch.device(spec.device), spec.model == "sasrec"
    device, history = torch.from_numpy(split.device), torch.from_numpy(split.history)
    sampled: list[np.ndarray] = []
    whole: list[np.ndarray] = []
    for lo in range(0, len(split.device), spec.batch_size):
        sl = slice(lo, lo + spec.batch_size)
        batch = make_batch(uses_history, device, history, torch.arange(len(device))[sl], dev)
        if split.candidates is not None:
            cand = torch.from_numpy(split.candidates[sl]).to(dev)  # [B, 1 + N]
            sampled.append(ranks_from_scores(model.score(batch, cand).cpu().numpy(), 0))
        if full:
            scores = model.score_all(batch).cpu().numpy()  # [B, I]
            whole.append(full_ranking_ranks(scores, split.target[sl], split.exclude[sl]))
    empty = np.empty(0, np.int64)
    return np.concatenate([empty, *sampled]), np.concatenate([empty, *whole])


def train_central(view: SampleView, spec: CentralSpec,
                  progress: Callable[[str], None] | None = None) -> CentralResult:
    """Train ``spec``'s baseline on ``view``'s pre/device events and rank its held-out events.

    Parameters
    ----------
    view : SampleView
        Its training negatives (``view-negatives`` >= 1), histories, windows and candidates.
    spec : CentralSpec
    progress : callable, optional
        Called with one line after each epoch.

    Returns
    -------
    CentralResult
    """
    torch.manual_seed(spec.seed)  # dropout draws (SASRec)
    events = gather_training(view)
    model = build_central(spec, view.n_devices, view.n_items, view.cfg.history_len)
    model.to(spec.device)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.l2)
    data = tuple(torch.from_numpy(a) for a in (events.device, events.item, events.history))
    positions = isinstance(model, SASRec) and spec.sasrec_objective == "positions"
    windows = torch.from_numpy(training_windows(events.device, view.cfg.history_len)
                               if positions else np.empty((0, 1), np.int64))
    losses: list[float] = []
    start = time.perf_counter()
    for epoch in range(spec.epochs):
        t0 = time.perf_counter()
        if isinstance(model, SASRec) and positions:
            losses.append(train_positions_epoch(model, opt, data[1], windows,
                                                click_negatives(view, events, epoch), spec, epoch))
        else:
            negatives = epoch_negatives(view, events, epoch)
            losses.append(train_epoch(model, opt, data, negatives, spec, epoch))
        if progress is not None:
            progress(f"{spec.model} epoch {epoch + 1}/{spec.epochs}: loss {losses[-1]:.4f} "
                     f"({time.perf_counter() - t0:.1f} s)")
    train_s = time.perf_counter() - start
    test = held_out(events.devs, "test", view.n_items)
    sampled, full = eval_ranks(model, test, spec, full=True)
    valid, _ = eval_ranks(model, held_out(events.devs, "valid", view.n_items), spec, full=False)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return CentralResult(test.device, sampled, full, valid, train_s, losses, n_params)


def ranks_summary(ranks: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Mean ``HR@k``, ``NDCG@k``, ``MRR@k`` for each k and the uncut ``MRR`` (fractions, not
    percent) of 0-based ranks [U]; NaN for every key when ``ranks`` is empty."""
    r = np.asarray(ranks, np.float64)
    return summarise({**rank_metrics(r, ks), "MRR": 1.0 / (r + 1.0)})
