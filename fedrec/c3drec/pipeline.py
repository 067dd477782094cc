"""The cloud's and the device's steps of C3DRec as plain functions (no Flower).

Cloud: ``pretrain_global`` (GRU4Rec on old users' pre-T_device clicks, AGP, gamma),
``candidates`` (item-CF), ``served_arrays`` (the model as downloaded), ``cloud_topk`` (push).
Device: ``personal_model`` (global + own delta), ``finetune``, ``personal_state`` (the delta
kept on the device), ``device_topk`` (recommendations over candidates and over all items).
The strategies (``strategies.c3drec_*``) and the baselines call exactly these.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedrec.c3drec.agp import prunable_names
from fedrec.c3drec.config import C3DRecConfig
from fedrec.c3drec.itemcf import candidate_sets, item_similarity, knn
from fedrec.c3drec.sparsify import decode_tensors, encode_tensors, threshold
from fedrec.c3drec.timeline import TimelineData
from fedrec.c3drec.train import (
    SparseSpec,
    TrainResult,
    make_model,
    next_click_events,
    rank_metrics_topk,
    topk_among,
    train,
    user_embeddings,
)
from fedrec.models.gru4rec import GRU4Rec
from fedrec.models.params import get_arrays, set_arrays

Arrays = dict[str, np.ndarray]
OUT = "out.weight"   # the item embeddings (rows of the output layer)


@dataclass(frozen=True, eq=False)
class GlobalModel:
    """The cloud's trained model: every parameter (pruned entries 0), masks of the pruned
    tensors (True = kept), the sparse layer's mode and gamma, and training facts."""

    arrays: Arrays
    masks: dict[str, np.ndarray]
    mode: str
    gamma: float
    loss: float = float("nan")
    events: int = 0
    seconds: float = 0.0


def pretrain_global(sessions: Sequence[np.ndarray], n_items: int, c: C3DRecConfig, mode: str,
                    seed: int) -> GlobalModel:
    """Train the global GRU4Rec on ``sessions`` with AGP and the sparse layer of ``mode``."""
    t0 = time.perf_counter()
    model = make_model(n_items, c.embedding_dim, c.hidden_dim, seed)
    plan = c.gamma_plan() if mode != "none" else None
    res = train(model, sessions, c.global_spec(), c.sparse(mode), np.random.default_rng([seed, 21]),
                agp=c.agp(), prune_names=c.prune_names(prunable_names(model)), gamma_plan=plan)
    gamma = res.gamma if plan is not None else c.gamma
    return GlobalModel(get_arrays(model), {n: m.numpy() for n, m in res.masks.items()}, mode,
                       gamma, res.loss, res.events, time.perf_counter() - t0)


def candidates(data: TimelineData, c: C3DRecConfig) -> list[np.ndarray]:
    """Item-CF candidate set of every device (cloud side, from ``data.cf_matrix()``)."""
    x = data.cf_matrix()
    sim = knn(item_similarity(x), c.cf_knn)
    thr = c.candidate_threshold if c.candidate_threshold >= 0 else None
    return candidate_sets(x, sim, c.candidate_proportion, thr)


def item_table(g: GlobalModel) -> np.ndarray:
    """Item embeddings as the cloud serves them [I, H]: thresholded at gamma in pull mode."""
    v = g.arrays[OUT]
    return threshold(v, g.gamma) if g.mode == "pull" else v


def served_arrays(g: GlobalModel) -> tuple[Arrays, dict[str, np.ndarray]]:
    """The model a device downloads and its keep-masks: pruned weights, pull-mode items
    thresholded (the device's forward pass would zero them anyway)."""
    arrays, masks = dict(g.arrays), dict(g.masks)
    if g.mode == "pull":
        arrays[OUT] = item_table(g)
        masks[OUT] = masks.get(OUT, np.ones(arrays[OUT].shape, bool)) & (arrays[OUT] != 0)
    return arrays, masks


def model_payload(g: GlobalModel, kind: str, prefix: str = "m.") -> Arrays:
    """The encoded model download (sparse encodings carry the masks)."""
    arrays, masks = served_arrays(g)
    return encode_tensors(arrays, kind, masks, prefix)


def read_model(payload: Mapping[str, np.ndarray],
               prefix: str = "m.") -> tuple[Arrays, dict[str, np.ndarray]]:
    """Decode a model download: (arrays, keep-masks of the sparsely encoded tensors)."""
    arrays, keep = decode_tensors(payload, prefix)
    return arrays, {n: m for n, m in keep.items() if not m.all()}


# --------------------------------------------------------------------------- device side
def personal_model(arrays: Arrays, state: Mapping[str, np.ndarray] | None, c: C3DRecConfig,
                   model: GRU4Rec | None = None) -> GRU4Rec:
    """The device's model: the downloaded global arrays plus its own stored delta.

    ``model`` (same sizes) is overwritten and returned instead of building a new one.
    """
    if model is None:
        model = make_model(arrays[OUT].shape[0], c.embedding_dim, c.hidden_dim, seed=0)
    set_arrays(model, apply_state(arrays, state))
    return model


def apply_state(arrays: Arrays, state: Mapping[str, np.ndarray] | None) -> Arrays:
    if not state:
        return arrays
    delta, _ = decode_tensors(state, "d.")
    return {n: a + delta[n] if n in delta else a for n, a in arrays.items()}


def personal_state(model: GRU4Rec, arrays: Arrays, c: C3DRecConfig) -> Arrays:
    """What the device stores: its change of the trainable parameters, sparsely encoded
    (nonzero only in unpruned entries of the GRU and of the item rows it trained)."""
    now = get_arrays(model)
    delta = {n: now[n] - arrays[n] for n in now if n.startswith(c.device_trainable())}
    return encode_tensors(delta, "auto", prefix="d.")


def finetune(model: GRU4Rec, sessions: Sequence[np.ndarray], c: C3DRecConfig, mode: str,
             gamma: float, masks: Mapping[str, np.ndarray], rng: np.random.Generator,
             epochs: int) -> TrainResult:
    """Personal training on the device's own clicks (user side only, masks fixed; the masks
    of frozen tensors are not needed)."""
    tmasks = {n: torch.from_numpy(np.asarray(m, bool)) for n, m in masks.items()
              if n.startswith(c.device_trainable())}
    return train(model, sessions, c.device_spec(epochs), c.sparse(mode, gamma), rng, tmasks)


def device_topk(model: GRU4Rec, sessions: Sequence[np.ndarray], c: C3DRecConfig, spec: SparseSpec,
                cand: np.ndarray, cand_emb: np.ndarray | None = None,
                own: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Top-K over the candidates and over all items for every test event of ``sessions``,
    plus the targets and user embeddings.

    Candidate embeddings: ``cand_emb`` (downloaded) where given, else the model's own rows;
    items in ``own`` (the device's personal item rows) always use the model's rows.
    """
    hist, targets = next_click_events(sessions, c.max_len)
    u = user_embeddings(model, hist, spec)                            # [E, H]
    v = model.item_embeddings().detach().numpy()
    v = threshold(v, spec.gamma) if spec.mode == "pull" else v
    emb = v[cand] if cand_emb is None else cand_emb.copy()
    if own is not None and len(own):
        mine = np.isin(cand, own)
        emb[mine] = v[cand[mine]]
    all_items = np.arange(v.shape[0])
    return {"targets": targets, "user_emb": u,
            "topk": topk_among(u, emb, cand, c.topk),
            "topk_all": topk_among(u, v, all_items, c.topk)}


def own_items(sessions: Sequence[np.ndarray], c: C3DRecConfig) -> np.ndarray | None:
    """The items whose rows a device fine-tunes (its own clicks), or None without
    ``device_items``."""
    if not c.device_items:
        return None
    return np.unique(np.concatenate([*sessions, np.zeros(0, np.int64)]))


def cloud_topk(u: np.ndarray, g: GlobalModel, cand: np.ndarray, k: int) -> np.ndarray:
    """Push mode: the cloud ranks the device's candidates for each uploaded embedding."""
    return topk_among(u, item_table(g)[cand], cand, k)


def metrics(topk: np.ndarray, topk_all: np.ndarray, targets: np.ndarray, k: int,
            group: str) -> dict[str, float]:
    """Device-level Recall@K / MRR@K over candidates and over all items, overall and for the
    user's group (``old``/``new``), plus event, hit and reciprocal-rank sums (for event-level
    averages: mean over devices of the sums, divided by the mean of the event counts)."""
    if len(targets) == 0:
        return {}
    out: dict[str, float] = {}
    for g in ("", f"{group}_"):
        out[f"test_{g}events"] = float(len(targets))
        for scope, top in (("", topk), ("all_", topk_all)):
            m = rank_metrics_topk(top, targets, k)
            out[f"test_{g}{scope}hits@{k}"] = float(m["hit"].sum())
            out[f"test_{g}{scope}rrsum@{k}"] = float(m["rr"].sum())
            out[f"test_{g}{scope}recall@{k}"] = float(m["hit"].mean())
            out[f"test_{g}{scope}mrr@{k}"] = float(m["rr"].mean())
    return out
