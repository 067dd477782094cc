"""C3DRec's recommendation step for a chunk of fine-tuned devices (``device_topk`` batched).

For every held-out click the device's personal GRU reads the (at most ``max_len``) previous
clicks of the session (``fedrec.c3drec.batched.user_embeddings_many``); the user embedding
is scored against all items (the device's own output rows where it has them) and, in pull
mode, against its candidates (downloaded rows, its own rows for its own items). Top-K
lists follow ``fedrec.metrics.topk_items`` (ties to the lower id; -1 pads short lists).
Devices are grouped by their number of held-out clicks so padding stays small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedrec.c3drec import batched as bt
from fedrec.c3drec.batched_ops import topk_rows
from fedrec.c3drec.cohort import DeviceInput, histories
from fedrec.c3drec.config import C3DRecConfig
from fedrec.c3drec.pipeline import own_items
from fedrec.c3drec.sparsify import threshold
from fedrec.c3drec.train import SparseSpec, next_click_events

ROWS = 1024                 # held-out clicks per batched GRU run
SCORE_ELEMENTS = 1 << 22    # entries of one score buffer (16 MiB)


@dataclass
class DeviceRanking:
    """``device_topk`` of one device: targets [E], user embeddings [E, H], top-K over its
    candidates [E, K] (None without candidates) and over all items [E, K]."""

    targets: np.ndarray
    user_emb: np.ndarray
    topk: np.ndarray | None
    topk_all: np.ndarray


def rank_many(cohort: bt.Cohort, g: bt.Shared, table: torch.Tensor, c: C3DRecConfig,
              spec: SparseSpec, devs: Sequence[DeviceInput], rows: Sequence[np.ndarray]
              ) -> list[DeviceRanking]:
    """``device_topk`` of every device of a trained chunk (``rows[i]``: device i's
    personal rows; ``table`` [I, E]: the downloaded input item table)."""
    n_items, n_h = g.out.shape
    events = [next_click_events(d.test, c.max_len) for d in devs]
    h = histories([e[0].numpy() for e in events], rows, n_items)
    n_ev = np.array([len(e[1]) for e in events], np.int64)
    width = max((len(d.cand) for d in devs if d.cand is not None), default=0)
    found: dict[int, DeviceRanking] = {}
    for part in groups(n_ev, min(ROWS, max(SCORE_ELEMENTS // n_items, 1)),
                       max(1, SCORE_ELEMENTS // max(width * n_h, 1))):
        sub = cohort.take(torch.from_numpy(part))
        u = bt.user_embeddings_many(sub, table, h.local[part], h.items[part], h.length[part],
                                    spec)                                     # [A, E, H]
        dev, slot = (torch.from_numpy(x) for x in np.nonzero(h.length[part] > 0))
        flat = u[dev, slot]                                                   # [M, H]
        top_all = _pad(topk_rows(bt.scores(flat, dev, slot, g, sub, spec), c.topk), c.topk)
        top = None
        if width:
            embs = [candidate_rows(cohort, i, rows[i], devs[i], c, spec, g) for i in part]
            top = topk_candidates(u, dev, slot, [devs[i].cand for i in part], embs, c.topk)
        at = np.r_[0, np.cumsum(n_ev[part])]
        for j, i in enumerate(part):
            cut = slice(at[j], at[j + 1])
            found[int(i)] = DeviceRanking(events[i][1], flat[cut].numpy(),
                                          None if devs[i].cand is None or top is None
                                          else top[cut], top_all[cut])
    return [found[i] for i in range(len(devs))]


def groups(sizes: np.ndarray, cap: int, members: int) -> list[np.ndarray]:
    """Groups of at most ``members`` indices, largest ``sizes`` first, with (members x
    largest size) <= cap (a single index may exceed it)."""
    order = np.argsort(-sizes, kind="stable")
    out, lo = [], 0
    while lo < len(order):
        hi = lo + min(max(cap // max(int(sizes[order[lo]]), 1), 1), members)
        out.append(order[lo:hi])
        lo = hi
    return out


def _pad(top: torch.Tensor, k: int) -> np.ndarray:
    """int64 [M, k'] -> [M, k] with -1 on the right (fewer than k items)."""
    return np.pad(top.numpy(), ((0, 0), (0, k - top.shape[1])), constant_values=-1)


def topk_candidates(u: torch.Tensor, dev: torch.Tensor, slot: torch.Tensor,
                    cands: Sequence[np.ndarray | None], embs: Sequence[np.ndarray | None],
                    k: int) -> np.ndarray:
    """``topk_among`` of each row ``u[dev[m], slot[m]]`` (u [A, E, H]) over its device's
    candidates ``cands[a]`` [C_a] with embeddings ``embs[a]`` [C_a, H] -> int64 [M, k]."""
    width = max((len(x) for x in cands if x is not None), default=0)
    if width == 0:
        return np.full((len(dev), k), -1, np.int64)
    ids = np.zeros((len(cands), width), np.int64)
    emb = np.zeros((len(cands), width, u.shape[2]), np.float32)
    n = np.zeros(len(cands), np.int64)
    for a, (cand, e) in enumerate(zip(cands, embs, strict=True)):
        if cand is None or e is None:
            continue
        order = np.argsort(cand, kind="stable")                       # ids ascending: ties
        n[a] = len(cand)
        ids[a, :n[a]], emb[a, :n[a]] = cand[order], e[order]
    s = torch.bmm(u, torch.from_numpy(emb).transpose(1, 2))           # [A, E, C]
    s.masked_fill_(torch.from_numpy(np.arange(width) >= n[:, None])[:, None, :], -torch.inf)
    top = topk_rows(s[dev, slot], k)                                   # [M, min(k, C)]
    out = torch.from_numpy(ids)[dev].gather(1, top)
    out[top >= torch.from_numpy(n)[dev][:, None]] = -1
    return _pad(out, k)


def candidate_rows(cohort: bt.Cohort, i: int, rows: np.ndarray, d: DeviceInput, c: C3DRecConfig,
                   spec: SparseSpec, g: bt.Shared) -> np.ndarray | None:
    """Pull: the candidates' embeddings [C, H] as ``device_topk`` takes them (downloaded
    rows, the device's own rows for its own items); None without candidates."""
    if d.cand is None:
        return None
    cand = d.cand
    emb = g.out[torch.from_numpy(cand)].numpy() if d.cand_emb is None else d.cand_emb.copy()
    personal = rows if d.cand_emb is None else own_items(d.train, c)   # rows it has its own
    if bt.OUT in cohort.params and personal is not None:
        v = cohort.params[bt.OUT][i, :len(rows)].numpy()
        v = threshold(v, spec.gamma) if spec.mode == "pull" else v
        mine = np.isin(cand, personal)
        emb[mine] = v[np.searchsorted(rows, cand[mine])]
    return emb
