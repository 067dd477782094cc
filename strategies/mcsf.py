"""MC-SF: slow (cloud) and fast (device) models that teach each other (Chen, Yao et al.,
MC²-SF; docs/mcsf.md; equations: ``fedrec.mcsf.model``).

Before round 1 the cloud trains DIN (the slow model without F2S) on the slow phase of every
device's clicks (the cloud's delayed logs, part ``pre``; its own sampled negatives) for
``mcsf-slow-pretrain-epochs``; its item table E is then frozen (devices read rows of it). A
round is one pass of Algorithm 1:

1. ``f2s`` (devices): each uploads its negative memory r^_n at its upload points (GRU_n of
   the current fast model) and names the candidates it will train on and rank;
2. ``slow`` (cloud): ``mcsf-slow-epochs`` of the slow model on the slow phase, each click
   paired with the device's latest memory at or before it (F2S; the first round starts from
   DIN with zero weight on r_e and the devices' GRU_n); then r_c, r_e for every requested
   candidate (S2F) and the slow model's logits of the test candidates;
3. ``fit`` (devices): the fast model on the fast phase with S2F, FedAvg of the deltas
   (float64, weighted by events) or kept on the device (``mcsf-fast-train = local``);
4. ``evaluate`` (devices): the fast model on the test events (fast protocol) and the slow
   model's ranks (slow protocol) as ``test_slow_`` metrics.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from clients.mcsf_device import (
    EVAL_CAND,
    EVAL_EVENTS,
    FAST,
    FIT_CAND,
    FIT_EVENTS,
    MEM,
    MEM_POINT,
    RC,
    RE,
    SLOW,
    TABLE,
    UPLOAD,
    MCSFDevice,
)
from fedrec.config import RunConfig, protocol_options
from fedrec.errors import ConfigError
from fedrec.mcsf.central import f2s_start, s2f_start, trainable
from fedrec.mcsf.config import PREFIX, MCSFConfig
from fedrec.mcsf.data import Events, windows
from fedrec.mcsf.model import Params, Shape, init_fast, init_slow
from fedrec.mcsf.train import adam_train, as_tensors, scores, slow_fn, with_s2f
from fedrec.models.base import PAD
from fedrec.payload import nbytes
from fedrec.protocol import EVALUATE, FIT, Arrays, DeviceReply
from fedrec.results import atomic_write, dumps
from fedrec.threat_config import parse_threat_config
from fedrec.views.draws import Touched, draw_excluding, row_keys
from fedrec.views.samples import SampleView, prepare_samples
from strategies.aggregation import weighted_mean
from strategies.base import DeviceStrategy, Phase
from strategies.rounds import mean_metrics

SLOW_STEP = "slow"
CLOUD_NEGATIVE_STREAM = 41          # the cloud's own negative draws (view streams are < 16)


def cloud_events(owner: np.ndarray, item: np.ndarray, n_devices: int, n_items: int,
                 o: MCSFConfig, seed: int) -> Events:
    """The cloud's slow-phase training events from its logs (grouped by device, time order):
    each click with ``negatives + exposure_negatives`` items the cloud never saw the device
    touch (the exposures live on the devices). mem = -1 (set per round)."""
    indptr = np.searchsorted(owner, np.arange(n_devices + 1))
    pos = np.arange(len(owner)) - indptr[owner]                               # [M]
    keep = np.ones(len(owner), bool)
    if o.slow_targets:
        keep = pos >= (indptr[owner + 1] - indptr[owner]) - o.slow_targets
    k = o.negatives + o.exposure_negatives
    seen = Touched.of(owner, item, n_items)
    rows = np.flatnonzero(keep)
    neg = draw_excluding(row_keys(seed, CLOUD_NEGATIVE_STREAM, owner[rows], pos[rows]),
                         owner[rows], k, seen)
    kept = np.searchsorted(owner[rows], np.arange(n_devices + 1))           # rows per device
    slow = np.concatenate([np.zeros((0, o.slow_len), np.int64)] + [
        windows(item[indptr[d]:indptr[d + 1]].astype(np.int64),
                pos[rows[kept[d]:kept[d + 1]]], o.slow_len) for d in range(n_devices)])
    cand = np.column_stack([item[rows], neg]).astype(np.int64)
    label = np.zeros(cand.shape, np.float32)
    label[:, 0] = 1.0
    empty = np.full((len(rows), o.fast_len), PAD, np.int64)
    return Events(owner[rows].astype(np.int64), pos[rows].astype(np.int64), slow, empty, empty,
                  np.full(len(rows), -1, np.int64), cand, label)


class MCSF(DeviceStrategy):
    """The slow half in the cloud, the fast half on the devices (module docstring)."""

    name = "mcsf"
    device_cls = MCSFDevice
    default_model = "mcsf"
    default_lr = 5e-4
    select_metric = "test_ndcg@5"
    options = MCSFConfig
    prefix = PREFIX
    rebuilt = frozenset({"opt", "events"})
    #: what the slow step sends this round (S2F features: ~133 KB per device, 0.8 GB on
    #: ML-1M) is recomputed every round: never checkpointed
    transient = DeviceStrategy.transient | {"_phase_t0", "sent", "sent_round"}

    def __init__(self, *, cfg: RunConfig, fed: SampleView, recorder: Any) -> None:
        self.opt = protocol_options(cfg, MCSFConfig)
        super().__init__(cfg=cfg, fed=fed, recorder=recorder)
        #: device -> (points [P], memory [P, d]) of its last upload
        self.memories: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        #: device -> its requests (fit events, fit candidates, eval events, eval candidates)
        self.requests: dict[int, tuple[np.ndarray, ...]] = {}
        #: device -> S2F features and slow logits computed in this round's slow step
        self.sent: dict[int, Arrays] = {}
        self.sent_round = 0

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        if cfg.train.model not in ("", "mcsf"):
            raise ConfigError(f"mcsf trains its own slow (DIN) and fast (GRU) models, not "
                              f"model={cfg.train.model!r}; drop the model key (the baselines: "
                              "python -m experiments.mcsf tables)")
        if parse_threat_config(cfg.raw_dict()).ldp.mechanism != "none":
            raise ConfigError("ldp is not wired into MC-SF's uploads (negative memory, fast "
                              "deltas); use ldp=none")

    @classmethod
    def prepare_data(cls, cfg: RunConfig) -> SampleView:
        return prepare_samples(cfg.data, protocol_options(cfg, MCSFConfig).view(cfg.data))

    def phases(self) -> tuple[Phase, ...]:
        return (Phase(UPLOAD), Phase(SLOW_STEP, device=False), Phase(FIT, available_only=True),
                Phase(EVALUATE, every=self.cfg.sim.eval_every, last=True, evaluates=True))

    # ------------------------------------------------------------------ shapes and data
    @property
    def shapes(self) -> tuple[Shape, Shape]:
        o, n = self.opt, self.cloud.n_items
        slow = Shape(n, o.dim, o.attention_widths, o.hidden_widths, o.f2s, False, o.reweight)
        fast = Shape(n, o.dim, o.attention_widths, o.hidden_widths, False, o.s2f, o.reweight)
        return slow, fast

    def build_events(self) -> Events:
        logs = self.cloud.logs
        return cloud_events(logs.owner, logs.item, self.n_devices, self.cloud.n_items, self.opt,
                            self.cfg.data.seed)

    def train(self, params: list[torch.Tensor], p: Params, shape: Shape,
              memory: torch.Tensor | None, epochs: int, what: str) -> list[float]:
        o = self.opt
        t = as_tensors(self.events, memory, o.dim)
        say = None if self.cfg.output.quiet else (lambda m: print(f"mcsf {m}", flush=True))
        return adam_train(params, slow_fn(p, shape, t), t["label"], epochs=epochs,
                          batch=o.batch, lr=o.lr, l2=o.l2, seed=self.cfg.train.seed,
                          progress=say, what=what)

    # ------------------------------------------------------------------ before round 1
    def init_global(self) -> Arrays:
        t0 = time.monotonic()
        o, seed = self.opt, self.cfg.train.seed
        torch.set_num_threads(1)
        self.events = self.build_events()
        slow_s, fast_s = self.shapes
        din_s = Shape(slow_s.n_items, o.dim, slow_s.attention, slow_s.hidden, False, False)
        din = init_slow(din_s, seed)
        losses = self.train(list(din.values()), din, din_s, None, o.slow_pretrain_epochs,
                            "din pretrain")
        fast0 = init_fast(Shape(**{**vars(fast_s), "s2f": False}), seed)
        fast = s2f_start(fast0, fast_s, seed) if o.s2f else fast0
        self.slow = f2s_start(din, fast, slow_s, seed) if o.f2s else din
        self.table = din["emb"].numpy().copy()
        arrays = self.download(fast)
        self.facts: dict[str, Any] = {
            "pretrain_loss": losses, "pretrain_s": time.monotonic() - t0,
            "cloud_events": len(self.events), "download_bytes": nbytes(arrays),
            "fast_parameters": sum(v.numel() for v in fast.values()),
            "slow_parameters": sum(v.numel() for v in self.slow.values()), "slow_loss": []}
        return arrays

    def download(self, fast: Params) -> Arrays:
        return {TABLE: self.table, **{FAST + k: v.numpy().astype(np.float32, copy=True)
                                      for k, v in fast.items()}}

    # ------------------------------------------------------------------ the round
    def phase_broadcast(self, phase: Phase, rnd: int) -> Arrays:
        return self.global_arrays

    def select(self, phase: Phase, rnd: int) -> list[int]:
        """The upload phase asks every device that trains or is evaluated this round."""
        if phase.name != UPLOAD:
            return super().select(phase, rnd)
        evaluating = any(p.evaluates for p in self.round_phases(rnd))
        ids = set(self.select_fit_devices(rnd)) | (
            set(self.select_eval_devices(rnd)) if evaluating else set())
        return sorted(ids)

    def phase_messages(self, phase: Phase, rnd: int, slots: list[str]) -> list[tuple[str, Any]]:
        self._phase_t0 = time.monotonic()
        return super().phase_messages(phase, rnd, slots)

    def phase_results(self, phase: Phase, rnd: int, results: Any, failures: list) -> dict[str, float]:
        """The base's, plus the phase's wall time (messages out to replies combined) as
        ``<phase>_phase_wall_s`` (bench_mcsf reads it)."""
        metrics = super().phase_results(phase, rnd, results, failures)
        self.log.update({f"{phase.name}_phase_wall_s": time.monotonic() - self._phase_t0})
        return metrics

    def on_phase(self, phase: Phase, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        """Keep each device's negative memory and requests (its last upload counts)."""
        for r in replies:
            u = r.upload
            self.memories[r.device_id] = (np.asarray(u[MEM_POINT], np.int64),
                                          np.asarray(u[MEM], np.float32))
            self.requests[r.device_id] = tuple(np.asarray(u[k], np.int64) for k in
                                               (FIT_EVENTS, FIT_CAND, EVAL_EVENTS, EVAL_CAND))
        pts = [len(r.upload[MEM_POINT]) for r in replies]
        rows = [r.metrics.get("table_rows_read", 0.0) for r in replies]
        return {"memories_mean": float(np.mean(pts)) if pts else 0.0,
                "table_rows_read_mean": float(np.mean(rows)) if rows else 0.0}

    def memory_table(self, events: Events) -> tuple[np.ndarray, torch.Tensor]:
        """Each event's row in a table of every stored memory (-1: none at or before it)."""
        mem = np.full(len(events), -1, np.int64)
        table, offset = [np.zeros((0, self.opt.dim), np.float32)], 0
        bounds = np.searchsorted(events.owner, np.arange(self.n_devices + 1))  # grouped by owner
        for d, (points, vectors) in sorted(self.memories.items()):
            sel = np.arange(bounds[d], bounds[d + 1])
            if len(sel):
                j = np.searchsorted(points, events.event[sel], side="right") - 1
                mem[sel] = np.where(j >= 0, j + offset, -1)
            table.append(vectors)
            offset += len(points)
        return mem, torch.from_numpy(np.concatenate(table))

    def cloud_step(self, phase: Phase, rnd: int) -> dict[str, float]:
        """Train the slow model (F2S), then compute what each requesting device is sent."""
        o = self.opt
        slow_s, _ = self.shapes
        mem, table = self.memory_table(self.events)
        self.events = Events(**{**vars(self.events), "mem": mem})
        losses = self.train(trainable(self.slow), self.slow, slow_s, table, o.slow_epochs,
                            f"round {rnd} slow")
        self.facts["slow_loss"].append(losses[-1] if losses else float("nan"))
        self.sent = self.features(sorted(self.requests), slow_s)
        self.sent_round = rnd
        return {"loss": losses[-1] if losses else float("nan"), "devices": float(len(self.sent))}

    def request_events(self, d: int, events: np.ndarray, cand: np.ndarray) -> Events:
        """A device's requested events as the cloud sees them: its delayed click sequence
        (the slow phase in the cloud's logs); ``mem`` = its latest upload at or before each
        event (a row of its own stored memories)."""
        logs = self.cloud.logs
        lo, hi = np.searchsorted(logs.owner, [d, d + 1])
        pre = logs.item[lo:hi].astype(np.int64)
        n = len(events)
        pad = np.full((n, self.opt.fast_len), PAD, np.int64)
        points, _ = self.memories[d]
        mem = np.searchsorted(points, events, side="right") - 1
        return Events(np.full(n, d, np.int64), events,
                      windows(pre, np.minimum(events, len(pre)), self.opt.slow_len), pad, pad,
                      mem.astype(np.int64), cand, np.zeros(cand.shape, np.float32))

    @torch.no_grad()
    def features(self, devices: list[int], slow_s: Shape) -> dict[int, Arrays]:
        """Per device: r_c, r_e of its fit and test candidates (S2F) and the slow logits of
        its test candidates, computed for every requesting device at once."""
        out: dict[int, Arrays] = {d: {} for d in devices}
        offsets = np.cumsum([0] + [len(self.memories[d][0]) for d in devices])
        memory = torch.from_numpy(np.concatenate(
            [np.zeros((0, self.opt.dim), np.float32)] + [self.memories[d][1] for d in devices]))
        for key, ev_i, cand_i in (("fit", 0, 1), ("eval", 2, 3)):
            parts = []
            for i, d in enumerate(devices):
                ev = self.request_events(d, self.requests[d][ev_i], self.requests[d][cand_i])
                parts.append(replace(ev, mem=np.where(ev.mem >= 0, ev.mem + offsets[i], -1)))
            if not parts:
                continue
            events = Events.concat(parts)
            x = as_tensors(events, memory, self.opt.dim)
            bounds = np.cumsum([0] + [len(p) for p in parts])
            if self.opt.s2f:
                x = with_s2f(x, self.slow, slow_s)
            slow = (scores(slow_fn(self.slow, slow_s, x), len(events)) if key == "eval"
                    else None)
            for i, d in enumerate(devices):
                sl = slice(bounds[i], bounds[i + 1])
                if self.opt.s2f:
                    out[d][f"{key}_{RC}"] = x[RC][sl].numpy()
                    out[d][f"{key}_{RE}"] = x[RE][sl].numpy()
                if slow is not None:
                    out[d][SLOW] = slow[sl]
        return out

    def phase_own(self, phase: Phase, rnd: int, device_ids: list[int]) -> dict[int, Arrays]:
        if phase.name not in (FIT, EVALUATE) or self.sent_round != rnd:
            return {}
        key = "fit" if phase.name == FIT else "eval"
        own: dict[int, Arrays] = {}
        for d in device_ids:
            got = self.sent.get(d)
            if got is None:
                continue            # no request this round: the device refuses (one line)
            mine = {k[len(key) + 1:]: v for k, v in got.items() if k.startswith(key + "_")}
            if phase.name == EVALUATE:
                mine[SLOW] = got[SLOW]
            own[d] = mine
        return own

    def aggregate(self, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        """FedAvg of the fast deltas (float64, weighted by events); nothing with ``local``."""
        if self.opt.fast_train == "fedavg":
            weights = [r.num_examples for r in replies]
            for k in [k for k in self.global_arrays if k.startswith(FAST)]:
                delta = weighted_mean([np.asarray(r.upload[k]) for r in replies], weights)
                self.global_arrays[k] = (self.global_arrays[k].astype(np.float64)
                                         + delta).astype(np.float32)
        return {k: v for k, v in mean_metrics(replies).items() if k != "loss"}

    def finish(self) -> None:
        super().finish()
        self.recorder.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.recorder.dir / "mcsf_cloud.json", dumps(self.facts))
