"""DCCL's evaluation (docs/dccl.md, Sec. 6): each held-out event's target among its sampled
candidates (HR@k, NDCG@k, MRR@k; per-user AUC, the macro-AUC of Fig. 4) and, optionally,
among every item (the user's training items excluded), for many devices' models at once:
row e is scored with its device's metapatch ``meta[owner[e]]`` (None: f alone)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from fedrec.metrics import rank_metrics, ranks_from_scores, user_auc
from fedrec.models.base import Batch
from fedrec.models.patched_din import PatchedDIN
from fedrec.views.config import DEVICE
from fedrec.views.samples import DeviceSamples

KS: tuple[int, ...] = (1, 5, 10)
ROWS = 256          # events scored per forward pass (x 101 candidates x history)
FULL_ROWS = 4       # events ranked over every item per pass (ATTENTION_PAIRS: 82 items)


def _batch(history: np.ndarray, owner: np.ndarray, profiles: np.ndarray | None,
           meta: torch.Tensor | None) -> Batch:
    return Batch(history=torch.from_numpy(history.astype(np.int64)),
                 profile=None if profiles is None else torch.from_numpy(profiles[owner]),
                 meta=None if meta is None else meta[torch.from_numpy(owner)])


@torch.no_grad()
def candidate_scores(model: PatchedDIN, history: np.ndarray, candidates: np.ndarray,
                     owner: np.ndarray, profiles: np.ndarray | None,
                     metas: Sequence[torch.Tensor | None]) -> list[np.ndarray]:
    """Logits [E, C] of ``candidates`` [E, C] given ``history`` [E, L], one array per model
    of ``metas`` (each [D, K], or None: f alone); ``owner`` [E] indexes ``profiles`` [D, P]
    and the metas. The models share f, so the attention runs once per chunk for all."""
    out: list[list[np.ndarray]] = [[] for _ in metas]
    for s in range(0, len(history), ROWS):
        own = owner[s:s + ROWS]
        x = model.frozen_features(torch.from_numpy(history[s:s + ROWS].astype(np.int64)),
                                  None if profiles is None else torch.from_numpy(profiles[own]),
                                  torch.from_numpy(candidates[s:s + ROWS]))    # [b, C, in]
        for j, meta in enumerate(metas):
            m = None if meta is None else meta[torch.from_numpy(own)]
            out[j].append(model.head(x, m).numpy())
    return [np.concatenate(o) if o else np.zeros(candidates.shape, np.float32) for o in out]


@torch.no_grad()
def full_ranks(model: PatchedDIN, history: np.ndarray, target: np.ndarray, owner: np.ndarray,
               exclude: list[np.ndarray], profiles: np.ndarray | None,
               meta: torch.Tensor | None) -> np.ndarray:
    """0-based rank of each target [E] among all items, ``exclude[e]`` scored -inf."""
    ranks = np.empty(len(target), np.int64)
    for lo in range(0, len(target), FULL_ROWS):
        sl = slice(lo, lo + FULL_ROWS)
        s = model.score_all(_batch(history[sl], owner[sl], profiles, meta)).numpy()  # [b, I]
        for j, e in enumerate(range(lo, min(lo + FULL_ROWS, len(target)))):
            keep = s[j, target[e]]
            s[j, exclude[e]] = -np.inf
            s[j, target[e]] = keep
        ranks[sl] = ranks_from_scores(s, target[sl])
    return ranks


def evaluate_devices(model: PatchedDIN, devs: Sequence[DeviceSamples], profiles: np.ndarray | None,
                     models: Mapping[str, torch.Tensor | None], full: str | None = None,
                     ks: Sequence[int] = KS) -> list[dict[str, float]]:
    """Per device: ``{prefix}{split}_{hr@k,ndcg@k,mrr@k,auc}`` for valid and test (sampled
    candidates) of every model ``models[prefix]`` (its metapatches [D, K], or None: f
    alone), and ``{full}test_full_{...}`` for the model named by ``full``; devices are rows
    of ``profiles`` and the metas in order. A device without a held-out event reports
    nothing."""
    out: list[dict[str, float]] = [{} for _ in devs]
    prefixes = list(models)
    for split in ("valid", "test"):
        sets = [getattr(d, split) for d in devs]
        owner = np.concatenate([np.full(len(s.event), i) for i, s in enumerate(sets)]).astype(np.int64)
        if len(owner) == 0:
            continue
        hist = np.concatenate([s.history for s in sets])
        scores = candidate_scores(model, hist, np.concatenate([s.candidates for s in sets]),
                                  owner, profiles, [models[p] for p in prefixes])  # each [E, 1 + N]
        for prefix, sc in zip(prefixes, scores, strict=True):
            per = rank_metrics(ranks_from_scores(sc, 0), ks)
            per["AUC"] = user_auc(sc[:, 0], sc[:, 1:])
            if full == prefix and split == "test":
                excl = [devs[i].items[(devs[i].part <= DEVICE)] for i in owner]
                ranks = full_ranks(model, hist, np.concatenate([s.target for s in sets]), owner,
                                   excl, profiles, models[prefix])
                per.update({f"full_{k}": v for k, v in rank_metrics(ranks, ks).items()})
            counts = np.bincount(owner, minlength=len(devs))
            for name, values in per.items():
                sums = np.bincount(owner, weights=values, minlength=len(devs))
                for i in np.flatnonzero(counts):
                    out[i][f"{prefix}{split}_{name.lower()}"] = float(sums[i] / counts[i])
    return out
