"""The paper's baselines (Sec. 4.3, Table 2) on the same timeline, plus an in-memory C3DRec
pass for sweeps, all from the protocol's own building blocks (``pipeline``) and evaluation.

* Only Global (GRU4Rec): one model trained in the cloud on every user's clicks before T_test
  (``central``: centralised, not possible after GDPR); no personal training.
* Global + Personal (upper bound): that model, then each device fine-tunes the user side on
  its own clicks in [T_device, T_test) exactly as C3DRec does (the only difference from
  C3DRec: the global model also saw the clicks after T_device).
* Only Personal: each device trains a fresh model (every parameter) on its own clicks before
  T_test, with the device's optimiser settings; it ranks candidates with its own item table.
* ``personal_pass``: C3DRec's device step for every device in memory (what the strategies
  run through Flower), returning per-device recommendations for re-scoring (candidate sweeps).

Per-device RNG: ``device_rng(seed, d)`` = the protocol's round-1 fit generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fedrec.c3drec.config import C3DRecConfig
from fedrec.c3drec.pipeline import (
    GlobalModel,
    device_topk,
    finetune,
    metrics,
    own_items,
    personal_model,
    pretrain_global,
    served_arrays,
)
from fedrec.c3drec.timeline import TimelineData
from fedrec.c3drec.train import TrainSpec, make_model, train
from fedrec.models.gru4rec import GRU4Rec

Metrics = dict[str, float]


def device_rng(seed: int, d: int) -> np.random.Generator:
    """The generator of device d's round-1 fit (``clients.device.device_rng``)."""
    return np.random.default_rng([seed, 1, d, 0])


def _score(model: GRU4Rec, data: TimelineData, d: int, cands: Sequence[np.ndarray],
           c: C3DRecConfig, mode: str, gamma: float, own: np.ndarray | None = None) -> Metrics:
    dev = data.device(d)
    rec = device_topk(model, dev.test, c, c.sparse(mode, gamma), cands[d], own=own)
    group = "new" if dev.is_new else "old"
    return metrics(rec["topk"], rec["topk_all"], rec["targets"], c.topk, group)


def personal_pass(data: TimelineData, g: GlobalModel, cands: Sequence[np.ndarray], c: C3DRecConfig,
                  seed: int, epochs: int, keep: Callable[[int, GRU4Rec], None] | None = None
                  ) -> list[Metrics]:
    """Every device: global model -> fine-tune on [T_device, T_test) -> score (``epochs`` 0 =
    the global model as is). ``keep(d, model)`` sees each personal model before the next."""
    arrays, masks = served_arrays(g)
    out, model = [], None
    for d in range(data.n_devices):
        dev = data.device(d)
        if not dev.test:
            continue
        model = personal_model(arrays, None, c, model)
        own = None
        if epochs > 0:
            finetune(model, dev.train, c, g.mode, g.gamma, masks, device_rng(seed, d), epochs)
            own = own_items(dev.train, c)
        out.append(_score(model, data, d, cands, c, g.mode, g.gamma, own))
        if keep is not None:
            keep(d, model)
    return out


def only_global(data: TimelineData, cands: Sequence[np.ndarray], c: C3DRecConfig, seed: int,
                mode: str = "none") -> tuple[GlobalModel, list[Metrics]]:
    """The centralised model (all clicks before T_test) and its scores, no personal step."""
    g = pretrain_global(data.central.all(), data.n_items, c, mode, seed)
    return g, personal_pass(data, g, cands, c, seed, epochs=0)


def only_personal(data: TimelineData, cands: Sequence[np.ndarray], c: C3DRecConfig, seed: int,
                  epochs: int) -> list[Metrics]:
    """A fresh model per device on its own clicks before T_test (no AGP, no sparse layer)."""
    out, spec = [], TrainSpec(epochs, c.device_batch, c.device_lr, c.max_len)
    for d in range(data.n_devices):
        if not data.test.of(d):
            continue
        model = make_model(data.n_items, c.embedding_dim, c.hidden_dim, seed=seed)
        train(model, data.central.of(d), spec, c.sparse("none"), device_rng(seed, d))
        out.append(_score(model, data, d, cands, c, "none", 0.0))
    return out


def micro(per_device: Sequence[Metrics], k: int = 20) -> dict[str, float]:
    """Event-level (micro) Recall@K and MRR@K, overall and per group, over candidates and all
    items; ``macro_*``: the mean of the per-device values (what a Flower round reports)."""
    out: dict[str, float] = {}
    for g in ("", "old_", "new_"):
        for scope in ("", "all_"):
            rows = [m for m in per_device if f"test_{g}{scope}hits@{k}" in m]
            events = sum(m[f"test_{g}events"] for m in rows)
            if not rows or events == 0:
                continue
            out[f"{g}{scope}recall@{k}"] = sum(m[f"test_{g}{scope}hits@{k}"] for m in rows) / events
            out[f"{g}{scope}mrr@{k}"] = sum(m[f"test_{g}{scope}rrsum@{k}"] for m in rows) / events
            out[f"macro_{g}{scope}recall@{k}"] = float(np.mean([m[f"test_{g}{scope}recall@{k}"]
                                                               for m in rows]))
        rows = [m for m in per_device if f"test_{g}events" in m]
        out[f"{g}events"] = float(sum(m[f"test_{g}events"] for m in rows))
        out[f"{g}devices"] = float(len(rows))
    return out
