"""MC-SF's on-device half: the fast model (Chen, Yao et al.; docs/mcsf.md).

Upload (F2S, "Negative Interest"): the device runs GRU_n of the downloaded fast model over
its real-time exposures and uploads the negative memory r^_n at its upload points (every
``mcsf-upload-every`` events: d floats each), with the candidate lists it will train on and
rank (item ids; the cloud computes the S2F features of exactly those).
Fit: with the cloud's r_c, r_e for each candidate (S2F, "Interest Embedding"), the device
trains its copy of the fast model on its fast-phase events (its click and exposure windows
stay on the device) and uploads the weight delta (``mcsf-fast-train = fedavg``) or keeps
the weights as private state (``local``, nothing uploaded).
Evaluate: ranks each test event's candidates with the fast model (every click and exposure
before the target) and reports the ranks of the slow model's logits the cloud sent (the
slow protocol: the cloud's delayed sequence and the last upload): scalars only.

A cohort is one batched computation: upload and evaluation stack the devices' windows,
fit trains per-device copies stacked on a leading axis (``fedrec.mcsf.train.fit_stacked``),
equal to the per-device loop (tests/mcsf/test_device.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch

from clients.device import DeviceLogic
from fedrec.coda.train import schedule
from fedrec.config import RunConfig, protocol_options
from fedrec.dccl.central import ranks_summary
from fedrec.mcsf.config import MCSFConfig
from fedrec.mcsf.data import Events, held_out_events, items_read, memory_points, training_events
from fedrec.mcsf.model import Params, Shape, negative_memory
from fedrec.mcsf.train import (
    FAST_KEYS,
    as_tensors,
    fast_fn,
    fit_stacked,
    pad_devices,
    scores,
    stacked_loss,
)
from fedrec.metrics import ranks_from_scores
from fedrec.protocol import EVALUATE, FIT, Arrays, DeviceReply, DeviceTask
from fedrec.views.config import DEVICE

UPLOAD = "f2s"             # phase: negative memory and candidate requests go up
TABLE = "emb"              # broadcast: the slow model's item table E [I, d] (frozen on devices)
FAST = "fast."             # broadcast prefix: the fast model's shared weights
MEM, MEM_POINT = "mem", "mem_point"            # upload: r^_n [P, d], points int32 [P]
FIT_EVENTS, FIT_CAND = "fit_events", "fit_cand"      # request: positions [n], candidates [n, C]
EVAL_EVENTS, EVAL_CAND = "eval_events", "eval_cand"  # request: positions [m], candidates [m, 101]
RC, RE, SLOW = "rc", "re", "slow_logits"       # own: S2F features [n, C, d], slow logits [m, C]
KS = (1, 5, 10)
FLOAT_BYTES = 4


def fast_shape(o: MCSFConfig, n_items: int) -> Shape:
    return Shape(n_items, o.dim, o.attention_widths, o.hidden_widths, o.f2s, o.s2f, o.reweight)


def fast_params(arrays: Arrays) -> Params:
    """The fast model's weights of a download (keys without the ``fast.`` prefix)."""
    return {k[len(FAST):]: torch.from_numpy(np.asarray(v, np.float32)) for k, v in arrays.items()
            if k.startswith(FAST)}


def rank_metrics_of(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    """HR@1/5/10, NDCG@5/10, MRR of 0-based ranks, as ``test_<prefix>...`` keys."""
    s = ranks_summary(ranks, KS)
    keys = {"HR@1": "hr@1", "HR@5": "hr@5", "HR@10": "hr@10", "NDCG@5": "ndcg@5",
            "NDCG@10": "ndcg@10", "MRR": "mrr"}
    return {f"test_{prefix}{v}": float(s[k]) for k, v in keys.items()}


class MCSFDevice(DeviceLogic):
    """The fast component of one device or a cohort (module docstring)."""

    scored_model = "personalised"

    def __init__(self, cfg: RunConfig, fed: object) -> None:
        super().__init__(cfg, fed)
        self.opt = protocol_options(cfg, MCSFConfig)
        self.shape = fast_shape(self.opt, self.fed.n_items)

    def handlers(self) -> dict[str, Callable[[DeviceTask], DeviceReply]]:
        return {UPLOAD: lambda t: self.upload_many([t])[0], FIT: self.fit,
                EVALUATE: self.evaluate}

    def fit(self, task: DeviceTask) -> DeviceReply:
        return self.fit_many([task])[0]

    def evaluate(self, task: DeviceTask) -> DeviceReply:
        return self.evaluate_many([task])[0]

    def run_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        kinds = {t.kind for t in tasks}
        if kinds == {UPLOAD}:
            return self.upload_many(tasks)
        if kinds == {FIT}:
            return self.fit_many(tasks)
        if kinds == {EVALUATE}:
            return self.evaluate_many(tasks)
        return super().run_many(tasks)

    # ------------------------------------------------------------------ events
    def fit_events(self, device_id: int) -> Events:
        o = self.opt
        return training_events(self.fed.device(device_id), DEVICE, slow_len=o.slow_len,
                               fast_len=o.fast_len, every=o.upload_every,
                               exposure_negatives=o.exposure_negatives)

    def held_out_events(self, device_id: int) -> Events:
        o = self.opt
        return held_out_events(self.fed.device(device_id), slow_len=o.slow_len, fast_len=o.fast_len,
                           every=o.upload_every)

    def start(self, task: DeviceTask) -> Params:
        """The fast weights this device trains or scores with: its own (``local``, once it
        has trained) or the downloaded global ones."""
        if self.opt.fast_train == "local" and task.state:
            return fast_params(task.state)
        return fast_params(task.broadcast)

    def inputs(self, task: DeviceTask, ev: Events, rc_key: str = RC, re_key: str = RE) -> dict[str, torch.Tensor]:
        t = as_tensors(ev, None, self.opt.dim)
        if self.opt.s2f:
            if rc_key not in task.own:
                raise ValueError(f"device {task.device_id} got no S2F features this round (it "
                                 f"sent no request in the {UPLOAD} phase)")
            t[RC] = torch.from_numpy(np.asarray(task.own[rc_key], np.float32))
            t[RE] = torch.from_numpy(np.asarray(task.own[re_key], np.float32))
            if t[RC].shape[:2] != t["cand"].shape:
                raise ValueError(f"device {task.device_id}: S2F features for {tuple(t[RC].shape[:2])} "
                                 f"candidates, it ranks {tuple(t['cand'].shape)}")
        return {k: v for k, v in t.items() if k in (*FAST_KEYS, "label")}

    # ------------------------------------------------------------------ phases
    def upload_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        """Negative memory at the upload points, and the candidate requests."""
        torch.set_num_threads(1)
        o = self.opt
        table = torch.from_numpy(np.asarray(tasks[0].broadcast[TABLE], np.float32))
        mems = [memory_points(self.fed.device(t.device_id), o.upload_every, o.fast_len)
                for t in tasks]
        windows = torch.from_numpy(np.concatenate([m.window for m in mems]))
        if o.fast_train == "fedavg":      # one model for the cohort: one pass over its windows
            memory = negative_memory(fast_params(tasks[0].broadcast), windows, table).numpy()
        else:
            memory = np.concatenate([
                negative_memory(self.start(t), torch.from_numpy(m.window), table).numpy()
                for t, m in zip(tasks, mems, strict=True)])
        replies, lo = [], 0
        for t, m in zip(tasks, mems, strict=True):
            fit, test = self.fit_events(t.device_id), self.held_out_events(t.device_id)
            upload = {MEM: memory[lo:lo + len(m.point)].astype(np.float32),
                      MEM_POINT: m.point.astype(np.int32),
                      FIT_EVENTS: fit.event.astype(np.int32), FIT_CAND: fit.cand.astype(np.int32),
                      EVAL_EVENTS: test.event.astype(np.int32),
                      EVAL_CAND: test.cand.astype(np.int32)}
            lo += len(m.point)
            rows_read = len(np.union1d(items_read(fit, m), items_read(test)))
            replies.append(DeviceReply(device_id=t.device_id, upload=upload,
                                       metrics={"table_rows_read": float(rows_read)},
                                       flops=float(6 * o.dim * 3 * o.dim * o.fast_len * len(m.point))))
        return replies

    def fit_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        """Every device trains its copy of the fast model on its fast phase (one stacked
        computation), from the same download."""
        torch.set_num_threads(1)
        o = self.opt
        table = torch.from_numpy(np.asarray(tasks[0].broadcast[TABLE], np.float32))
        events = [self.fit_events(t.device_id) for t in tasks]
        data = pad_devices([self.inputs(t, ev) for t, ev in zip(tasks, events, strict=True)])
        steps = schedule([len(ev) for ev in events], o.device_batch, [t.rng for t in tasks],
                         self.cfg.train.local_epochs)
        starts = [self.start(t) for t in tasks]
        start = {k: torch.stack([s[k] for s in starts]) for k in starts[0]}
        new = fit_stacked(start, self.shape, data, steps, table, self.cfg.train.lr, o.l2)
        loss = stacked_loss(new, self.shape, data, table)
        params = sum(v[0].numel() for v in new.values())
        replies = []
        for i, (t, ev) in enumerate(zip(tasks, events, strict=True)):
            mine = {FAST + k: v[i].numpy().astype(np.float32) for k, v in new.items()}
            delta = {k: mine[k] - np.asarray(t.broadcast[k], np.float32) for k in mine}
            fedavg = o.fast_train == "fedavg"
            rows_seen = len(ev) * self.cfg.train.local_epochs
            replies.append(DeviceReply(
                device_id=t.device_id, upload=delta if fedavg else {},
                state=None if fedavg else mine, num_examples=len(ev),
                metrics={"loss": float(loss[i])} if len(ev) else {},
                flops=3.0 * self.row_flops() * rows_seen * ev.cand.shape[1],
                peak_mem_bytes=float(FLOAT_BYTES * (3 * params + len(ev) * ev.cand.shape[1]
                                                    * (2 * o.fast_len + 4) * o.dim))))
        return replies

    def row_flops(self) -> float:
        """Forward multiply-adds of one (event, candidate): two GRUs over the windows, the MLP."""
        d, h = self.opt.dim, self.opt.hidden_widths
        mlp = (4 * d) * h[0] + sum(a * b for a, b in itertools.pairwise(h)) + h[-1]
        return float(2 * self.opt.fast_len * 6 * d * d + mlp)

    def evaluate_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        """Fast-protocol ranks of every test event (one pass over the cohort's events when
        the devices share the model), and the slow model's ranks from the sent logits."""
        torch.set_num_threads(1)
        table = torch.from_numpy(np.asarray(tasks[0].broadcast[TABLE], np.float32))
        events = [self.held_out_events(t.device_id) for t in tasks]
        xs = [self.inputs(t, ev) for t, ev in zip(tasks, events, strict=True)]
        bounds = np.cumsum([0] + [len(ev) for ev in events])
        if self.opt.fast_train == "fedavg":   # one model: the cohort's events in one pass
            x = {k: torch.cat([xi[k] for xi in xs]) for k in xs[0]}
            logits = scores(fast_fn(fast_params(tasks[0].broadcast), self.shape, x, table),
                            int(bounds[-1]))
        else:
            logits = np.concatenate([scores(fast_fn(self.start(t), self.shape, xi, table),
                                            len(ev)) for t, xi, ev in zip(tasks, xs, events,
                                                                          strict=True)])
        replies = []
        for i, t in enumerate(tasks):
            metrics = rank_metrics_of(ranks_from_scores(logits[bounds[i]:bounds[i + 1]], 0), "")
            if SLOW in t.own:
                slow = np.asarray(t.own[SLOW], np.float32)
                metrics.update(rank_metrics_of(ranks_from_scores(slow, 0), "slow_"))
            replies.append(DeviceReply(device_id=t.device_id, metrics=metrics))
        return replies
