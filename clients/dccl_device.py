"""DCCL's on-device half: MetaPatch (Yao et al., KDD 2021, Sec. 3.1, Eq. 3).

Fit (round r): the device downloads f and the bases Theta (broadcast) and its starting
metapatch (own: ``U(theta, u)`` from the cloud, or its own last theta with
``dccl-theta-init = warm``), trains only the metapatch (K floats) on its own rows of the
round's interval (f and Theta frozen), keeps it as private state, and uploads it: nothing
else leaves the device (tests/dccl/test_payload.py). Before uploading it scores its held-out
events with f alone (``f_`` metrics: the cloud model) and with its patched model (``e_``:
DCCL-e). Evaluate (after MoMoDistill): the new f and Theta with the new starting metapatch
(DCCL-m, the main metrics) and the new f alone (``fm_``).

A cohort is one batched computation: its metapatches are one [devices, K] tensor
(``fedrec.dccl.train.metapatch_fit``), equal to the per-device loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from clients.device import DeviceLogic
from fedrec.config import RunConfig, protocol_options
from fedrec.dccl.config import DCCLConfig
from fedrec.dccl.data import CTRRows, activity_codes, needed_items, round_rows
from fedrec.dccl.scoring import KS, evaluate_devices
from fedrec.dccl.train import metapatch_fit
from fedrec.models.patched_din import PatchedDIN
from fedrec.payload import fingerprint
from fedrec.protocol import EVALUATE, FIT, Arrays, DeviceReply, DeviceTask
from fedrec.views.config import DEVICE
from fedrec.views.samples import DeviceSamples

THETA = "theta"            # upload and private state: the metapatch [K]
THETA_START = "theta0"     # own download: the round's starting metapatch [K]
PROFILE_SIZES = "profile_sizes"   # broadcast: codes per profile column [P] (model structure)
ITEM_TABLE = "item_emb.weight"    # f's item embeddings [I, dim]: broadcast with item-rows = all
ITEM_IDS = "item_ids"             # own, item-rows = needed: the items it reads [n] (int32)
EVAL_ITEM_IDS = "eval_item_ids"   # request: the subset its evaluation reads [m] (int32)
ITEM_ROWS = "item_rows"           # own, item-rows = needed: their embedding rows [n, dim]
ITEMS = "items"                   # item-rows = needed: the phase where a device asks for them
FLOAT_BYTES = 4


def build_model(opt: DCCLConfig, n_items: int, side: Any, profile_sizes: tuple[int, ...],
                seed: int | None = None) -> PatchedDIN:
    """The run's PatchedDIN (both halves build it from the same options)."""
    model = PatchedDIN(n_items=n_items, dim=opt.item_dim, side_dim=opt.side_dim,
                       categories=side.category, genres=side.genres,
                       profile_sizes=profile_sizes, profile_dim=opt.profile_dim,
                       attention_hidden=opt.attention_widths, hidden=opt.hidden_widths,
                       meta_dim=opt.meta_dim, seed=seed)
    model.junctions = opt.patched
    return model


def model_arrays(model: PatchedDIN) -> Arrays:
    """f and Theta (every parameter) as float32 arrays: the download."""
    return {n: p.detach().numpy().astype(np.float32, copy=True) for n, p in model.named_parameters()}


def load_arrays(model: PatchedDIN, arrays: Arrays) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(torch.from_numpy(np.asarray(arrays[n])))


def row_flops(model: PatchedDIN, history_len: int, meta_dim: int) -> float:
    """Forward multiply-adds of one scored row (attention over the history, junctions, patch
    generation and patches); training ~ 3x."""
    att = sum(p.numel() for p in model.att.parameters()) + model.att_out.weight.numel()
    dense = sum(p.numel() for p in model.junction.parameters()) + model.out.weight.numel()
    patches = sum(b.numel() * 2 for b in model.basis)
    return float(history_len * att + dense + patches + meta_dim)


class DCCLDevice(DeviceLogic):
    """MetaPatch training and evaluation of one device or a cohort (module docstring)."""

    scored_model = "personalised"
    eval_ks = KS

    def __init__(self, cfg: RunConfig, fed: Any) -> None:
        super().__init__(cfg, fed)
        self.opt = protocol_options(cfg, DCCLConfig)
        self._model: tuple[int, PatchedDIN] | None = None

    def model(self, broadcast: Arrays) -> PatchedDIN:
        """The downloaded f and Theta, rebuilt only when the download changes."""
        key = fingerprint(broadcast)
        if self._model is None or self._model[0] != key:
            sizes = tuple(int(s) for s in broadcast[PROFILE_SIZES])
            model = build_model(self.opt, self.fed.n_items, self.fed.device(0).side, sizes)
            table = np.zeros(tuple(model.item_emb.weight.shape), np.float32)  # rows come own
            load_arrays(model, {ITEM_TABLE: table, **broadcast})
            self._model = (key, model)
        return self._model[1]

    def handlers(self) -> dict[str, Callable[[DeviceTask], DeviceReply]]:
        return {ITEMS: self.ask_items, FIT: self.fit, EVALUATE: self.evaluate}

    def ask_items(self, task: DeviceTask) -> DeviceReply:
        """``item-rows = needed``: the device names the item rows it will read this round
        (in DCCL the cloud holds its logs already, so the ids tell it nothing new)."""
        dev = self.fed.device(task.device_id)
        fit = needed_items(dev, self.round_rows(task, dev)).astype(np.int32)   # fit reads these
        held_out = needed_items(dev, []).astype(np.int32)                       # evaluation these
        return DeviceReply(device_id=task.device_id, upload={ITEM_IDS: fit, EVAL_ITEM_IDS: held_out})

    def fit(self, task: DeviceTask) -> DeviceReply:
        return self.fit_many([task])[0]

    def evaluate(self, task: DeviceTask) -> DeviceReply:
        return self.evaluate_many([task])[0]

    def run_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        """A cohort's tasks (one phase) as one batched computation."""
        kinds = {t.kind for t in tasks}
        if kinds == {FIT}:
            return self.fit_many(tasks)
        if kinds == {EVALUATE}:
            return self.evaluate_many(tasks)
        return super().run_many(tasks)

    # ------------------------------------------------------------------ fit
    def start(self, task: DeviceTask) -> np.ndarray:
        """The round's starting metapatch (``dccl-theta-init``)."""
        if self.opt.theta_init == "warm" and task.state and THETA in task.state:
            return np.asarray(task.state[THETA], np.float32)
        if self.opt.theta_init == "zeros":
            return np.zeros(self.opt.meta_dim, np.float32)
        return np.asarray(task.own[THETA_START], np.float32)

    def round_rows(self, task: DeviceTask, dev: DeviceSamples) -> list[CTRRows]:
        """The device's rows of this round, one copy per local epoch, in event order."""
        return round_rows(dev, task.rnd, self.cfg.train.num_rounds, self.fed.n_items,
                          self.opt.negatives, self.cfg.data.seed, self.cfg.train.local_epochs)

    def epoch_rows(self, task: DeviceTask, dev: DeviceSamples) -> list[CTRRows]:
        """The device's rows of this round, one shuffled copy per local epoch."""
        return [r.take(task.rng.permutation(len(r))) for r in self.round_rows(task, dev)]

    def with_item_rows(self, model: PatchedDIN, tasks: list[DeviceTask],
                       needs: list[np.ndarray]) -> None:
        """``item-rows = needed``: the item table holds exactly the rows the cohort's devices
        were sent (zero elsewhere); each device must have been sent every row it reads."""
        if self.opt.item_rows != "needed":
            return
        with torch.no_grad():
            table = model.item_emb.weight
            table.zero_()
            for t, need in zip(tasks, needs, strict=True):
                if ITEM_IDS not in t.own:
                    raise ValueError(f"device {t.device_id} got no item rows (dccl-item-rows = "
                                     "needed and it made no request this round)")
                ids = np.asarray(t.own[ITEM_IDS], np.int64)
                missing = np.setdiff1d(need, ids)
                if len(missing):
                    raise ValueError(f"device {t.device_id} reads {len(missing)} item rows the "
                                     f"cloud did not send (e.g. item {missing[0]})")
                table[torch.from_numpy(ids)] = torch.from_numpy(np.asarray(t.own[ITEM_ROWS]))

    def fit_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        torch.set_num_threads(1)
        model = self.model(tasks[0].broadcast)
        devs = [self.fed.device(t.device_id) for t in tasks]
        profiles = self.profiles(devs)
        rows = [self.epoch_rows(t, d) for t, d in zip(tasks, devs, strict=True)]
        self.with_item_rows(model, tasks, [needed_items(d, r) for d, r in zip(devs, rows, strict=True)])
        theta0 = torch.from_numpy(np.stack([self.start(t) for t in tasks]))
        theta, loss = metapatch_fit(model, rows, profiles, theta0, lr=self.opt.device_lr,
                                    batch=self.opt.device_batch)
        scored = self.scores(model, devs, profiles, {"f_": None, "e_": theta})
        flops = row_flops(model, self.opt.history_len, self.opt.meta_dim)
        replies = []
        for i, t in enumerate(tasks):
            n = sum(len(r) for r in rows[i])
            th = theta[i].numpy().astype(np.float32)
            metrics = scored[i]
            if n:
                metrics["loss"] = float(loss[i])
            replies.append(DeviceReply(
                device_id=t.device_id, upload={THETA: th}, state={THETA: th}, metrics=metrics,
                num_examples=n, flops=3.0 * flops * n,
                peak_mem_bytes=self.device_memory(model)))
        return replies

    def device_memory(self, model: PatchedDIN) -> float:
        """f, Theta and one mini-batch's activations (attention over the history dominates)."""
        params = sum(p.numel() for p in model.parameters())
        width = max(linear.out_features for linear in model.att if isinstance(linear, torch.nn.Linear))
        acts = self.opt.device_batch * self.opt.history_len * (2 * width + model.item_width) * 3
        return float(FLOAT_BYTES * (params + acts))

    # ------------------------------------------------------------------ evaluate
    def profiles(self, devs: list[DeviceSamples]) -> np.ndarray:
        """Profile codes [D, P]; the activity profile where the data has none."""
        codes = [d.profile for d in devs]
        if any(c is None for c in codes):
            return activity_codes(np.array([(d.part <= DEVICE).sum() for d in devs]))
        return np.stack([np.asarray(c) for c in codes]).astype(np.int64)

    def scores(self, model: PatchedDIN, devs: list[DeviceSamples], profiles: np.ndarray | None,
               models: dict[str, torch.Tensor | None], full: str | None = None
               ) -> list[dict[str, float]]:
        """``evaluate_devices`` at this device's cut-offs (models: prefix -> metas or None)."""
        return evaluate_devices(model, devs, profiles, models, full, self.eval_ks)

    def evaluate_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        """DCCL-m (new f and Theta, starting metapatch U(theta, u)) and the new f alone."""
        torch.set_num_threads(1)
        model = self.model(tasks[0].broadcast)
        devs = [self.fed.device(t.device_id) for t in tasks]
        profiles = self.profiles(devs)
        self.with_item_rows(model, tasks, [needed_items(d, []) for d in devs])
        full = bool(tasks[0].config.get("full_ranking", False))
        meta = torch.from_numpy(np.stack([self.start(t) for t in tasks]))
        scored = self.scores(model, devs, profiles, {"": meta, "fm_": None}, "" if full else None)
        return [DeviceReply(device_id=t.device_id,
                            metrics={**m, "train_events": float((d.part <= DEVICE).sum())})
                for t, d, m in zip(tasks, devs, scored, strict=True)]
