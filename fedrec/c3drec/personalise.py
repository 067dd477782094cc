"""C3DRec's device steps for a cohort in one batched computation (no Flower).

``personalise_many`` gives every device what ``personal_model`` + ``finetune`` +
``personal_state`` + ``device_topk`` give it one by one (``clients.c3drec_device``'s
per-device ``fit``): the fine-tuned personal delta (the same sparse encoding), the reported
loss and targets, the user embedding of each held-out click and the top-K lists over its
candidates and over all items. Devices are sorted by their work (``work``) and cut into
chunks of ``CHUNK``; a chunk trains with ``fedrec.c3drec.batched.finetune_many`` and ranks
with ``fedrec.c3drec.rank_many``. Devices never interact, so neither the order nor the
chunks change a device's outcome beyond float rounding (tests/c3drec/test_batched.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedrec.c3drec import batched as bt
from fedrec.c3drec.cohort import (
    DeviceInput,
    DevicePlan,
    Schedule,
    device_plan,
    padded_rows,
    personal_rows,
)
from fedrec.c3drec.config import C3DRecConfig
from fedrec.c3drec.pipeline import OUT
from fedrec.c3drec.rank_many import DeviceRanking, rank_many
from fedrec.c3drec.sparsify import decode_tensors, encode, encode_rows, named

Arrays = dict[str, np.ndarray]
ITEM = bt.ITEM
#: devices per batched computation: per-device tensors stay a few MB (fresh large
#: allocations cost page faults that outweigh the work here)
CHUNK = 64


@dataclass
class DeviceOutcome:
    """What ``fit`` computes on one device: ``TrainResult``'s loss and events, the encoded
    delta (``personal_state``) and ``device_topk``'s lists (``rank_many.DeviceRanking``)."""

    loss: float
    events: int
    state: Arrays
    ranking: DeviceRanking


def personalise_many(arrays: Arrays, masks: Mapping[str, np.ndarray], c: C3DRecConfig,
                     mode: str, gamma: float, epochs: int, devices: Sequence[DeviceInput],
                     chunk: int = CHUNK) -> list[DeviceOutcome]:
    """Every device's fine-tuning and ranking (module docstring), in input order."""
    spec = c.sparse(mode, gamma)
    plans = [device_plan(d.train, c.device_spec(epochs), d.rng) for d in devices]
    order = sorted(range(len(devices)), key=lambda i: work(plans[i]))
    g = bt.shared(arrays[OUT], spec)
    table = torch.from_numpy(np.ascontiguousarray(arrays[ITEM], np.float32))
    out: dict[int, DeviceOutcome] = {}
    for lo in range(0, len(order), chunk):
        part = order[lo:lo + chunk]
        devs, part_plans = [devices[i] for i in part], [plans[i] for i in part]
        deltas = [decode_tensors(d.state, "d.")[0] if d.state else {} for d in devs]
        cohort, rows = stack(arrays, masks, c, [d.train for d in devs], deltas)
        losses, counts = bt.finetune_many(cohort, g, Schedule(part_plans, rows, len(table)),
                                          spec, c.device_lr, len(table))
        ranked = rank_many(cohort, g, table, c, spec, devs, rows)
        for j, (i, p) in enumerate(zip(part, part_plans, strict=True)):
            n = len(p.steps)
            loss = bt.epoch_loss(losses[j, :n], counts[j, :n], p.last_epoch) if n else np.nan
            out[i] = DeviceOutcome(float(loss), p.events,
                                   personal_delta(cohort, j, rows[j], arrays, c), ranked[j])
    return [out[i] for i in range(len(devices))]


def work(p: DevicePlan) -> tuple[int, int, int]:
    """Sort key: most steps first (a step's devices are then a prefix of their chunk), then
    the widest and longest mini-batches (a chunk pads its batches to their largest)."""
    pieces = max((len(b) for b in p.steps), default=0)
    longest = max((len(x) for x in p.pieces), default=0)
    return -len(p.steps), -pieces, -longest


def stack(arrays: Arrays, masks: Mapping[str, np.ndarray], c: C3DRecConfig,
          train: Sequence[Sequence[np.ndarray]],
          deltas: Sequence[Mapping[str, np.ndarray]]) -> tuple[bt.Cohort, list[np.ndarray]]:
    """The devices' personal models (global arrays + stored delta, ``apply_state``) as a
    ``batched.Cohort``: GRU copies, and of the item tables the rows of the clicked items and
    the rows the delta changes (every other row is the global one)."""
    tables = (ITEM, OUT) if c.device_items or any(OUT in d for d in deltas) else (ITEM,)
    rows = [np.unique(np.concatenate(
        [*t, np.zeros(0, np.int64), *(np.flatnonzero(d[n].any(axis=1)) for n in tables if n in d)]
    ).astype(np.int64)) for t, d in zip(train, deltas, strict=True)]
    ids, ok = padded_rows(rows)
    params: dict[str, torch.Tensor] = {}
    for name in (ITEM, *bt.GRU, *tables[1:]):
        base = arrays[name][ids] if name in tables else np.broadcast_to(
            arrays[name], (len(rows), *arrays[name].shape))
        p = np.array(base, np.float32, order="C")
        for i, d in enumerate(deltas):
            if name in d:
                p[i] = base[i] + (d[name][ids[i]] if name in tables else d[name])
        if name in tables:
            p *= ok[:, :, None]                            # padded rows: zero (no L1, no grad)
        params[name] = torch.from_numpy(p)
    keep = {}
    for n, m in masks.items():
        if n in params and n.startswith(c.device_trainable()):        # finetune's masks
            m = np.asarray(m, bool)
            keep[n] = torch.from_numpy((m[ids] if n in tables else m).astype(np.float32))
    learns = None
    if c.device_items:                                    # train's own-rows mask
        learns = torch.from_numpy(np.stack([np.isin(r, personal_rows(t)) for r, t in
                                            zip(ids, train, strict=True)]) & ok)
    return bt.Cohort(params, torch.from_numpy(ids), torch.from_numpy(ok), keep, learns), rows


def personal_delta(cohort: bt.Cohort, i: int, rows: np.ndarray, arrays: Arrays,
                   c: C3DRecConfig) -> Arrays:
    """``personal_state`` of device i: its change of the trainable parameters, encoded
    (the item tables from its personal rows, without building the full tables)."""
    out: Arrays = {}
    for name in arrays:
        if not name.startswith(c.device_trainable()):
            continue
        now = cohort.params[name][i].numpy()
        if name in (ITEM, OUT):
            enc = encode_rows(arrays[name].shape, rows, now[:len(rows)] - arrays[name][rows])
        else:
            enc = encode(now - arrays[name])
        out.update(named(name, enc, "d."))
    return out
