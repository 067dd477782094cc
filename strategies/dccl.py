"""DCCL: device-cloud collaborative learning (Yao et al., KDD 2021; docs/dccl.md).

Before round 1 (``init_global``, Algorithm 1's first line): the cloud pre-trains f (PatchedDIN
without patches) on every user's pre-training half, then the bases Theta and the encoder U
by Eq. 7 with theta = 0 (teacher: f itself). A round has three phases:

1. ``fit`` (devices, MetaPatch, Eq. 3): each device trains its metapatch on its interval of
   the DCCL half and uploads it (K floats); ``clients.dccl_device``;
2. ``momodistill`` (cloud only, Eqs. 5-7): on the same interval's rows (the cloud has the
   logs), f is distilled from every device model (teacher: the old f and Theta with each
   row's own uploaded metapatch, all in one batched pass) with BCE + beta * KL; then, f
   frozen, Theta and U are learned against the same teachers through U(theta, u). The next
   starting metapatches U(theta, u) are computed for every device;
3. ``evaluate`` (devices): DCCL-m and f alone on the held-out events.

The fit phase's replies also carry DCCL-e (``e_``) and the pre-round f (``f_``) metrics.
Per-device metrics of the last evaluation go to ``dccl_devices.csv`` (Fig. 4's groups).
"""

from __future__ import annotations

import csv
import functools
import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from clients.dccl_device import (
    EVAL_ITEM_IDS,
    ITEM_IDS,
    ITEM_ROWS,
    ITEM_TABLE,
    ITEMS,
    PROFILE_SIZES,
    THETA,
    THETA_START,
    DCCLDevice,
    build_model,
    load_arrays,
    model_arrays,
)
from fedrec.config import RunConfig, protocol_options
from fedrec.dccl.config import PREFIX, DCCLConfig
from fedrec.dccl.data import ACTIVITY_LEVELS, CTRRows, activity_codes, cloud_rows
from fedrec.dccl.train import fit_epochs, frozen_copy, row_logits
from fedrec.errors import ConfigError
from fedrec.models.patched_din import PatchedDIN
from fedrec.payload import nbytes
from fedrec.protocol import EVALUATE, FIT, Arrays, DeviceReply
from fedrec.results import RunRecorder, atomic_write, dumps
from fedrec.threat_config import parse_threat_config
from fedrec.views.samples import SampleView, prepare_samples
from strategies.base import DeviceStrategy, Phase
from strategies.rounds import mean_metrics

DISTILL = "momodistill"
#: rows -> their metapatches [N, K] (None: f alone); rows -> teacher logits [N]
MetaFn = Callable[[CTRRows], torch.Tensor | None]
TeacherFn = Callable[[CTRRows], np.ndarray]
#: the pre-trained f of the last configuration (pretrain_key -> (f arrays, losses)): arms of
#: one experiment that differ only in K, beta, junctions or device options share it
PRETRAINED: dict[tuple, tuple[Arrays, list[float]]] = {}


def pretrain_key(cfg: RunConfig) -> tuple:
    """Everything pre-training f depends on (f's initialisation precedes Theta's, so K and
    the other patch options leave it unchanged)."""
    o = protocol_options(cfg, DCCLConfig)
    return (cfg.data, cfg.train.seed, o.history_len, o.negatives, o.min_item_interactions,
            o.item_dim, o.side_dim, o.profile_dim, o.attention, o.hidden, o.pretrain_epochs,
            o.cloud_lr, o.cloud_batch)


class DCCL(DeviceStrategy):
    """MetaPatch on the devices, MoMoDistill in the cloud (module docstring)."""

    name = "dccl"
    device_cls = DCCLDevice
    default_model = "patched-din"
    default_lr = 1e-3
    select_metric = "valid_ndcg@10"
    options = DCCLConfig
    prefix = PREFIX
    #: options are rebuilt from the run config on resume; item-row requests last one round
    #: (the items phase opens every round), so a checkpoint does not carry them
    rebuilt = frozenset({"opt", "requested"})

    def __init__(self, *, cfg: RunConfig, fed: SampleView, recorder: RunRecorder) -> None:
        self.opt = protocol_options(cfg, DCCLConfig)
        super().__init__(cfg=cfg, fed=fed, recorder=recorder)
        self.last_eval: dict[int, dict[str, float]] = {}
        #: item-rows = needed: (round, {device: (fit ids, evaluation ids)}) of the requests
        self.requested: tuple[int, dict[int, tuple[np.ndarray, np.ndarray]]] = (0, {})

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        if cfg.train.model not in ("", "patched-din"):
            raise ConfigError(f"dccl trains its PatchedDIN (DIN + model patches), not "
                              f"model={cfg.train.model!r}; drop the model key (the baselines: "
                              "python -m experiments.dccl table2)")
        ldp = parse_threat_config(cfg.raw_dict()).ldp.mechanism
        if ldp != "none":
            raise ConfigError(f"ldp={ldp} would noise the metapatches, but DCCL's cloud reads "
                              "every device's logs (Sec. 3), so it protects nothing; use ldp=none")

    @classmethod
    def prepare_data(cls, cfg: RunConfig) -> SampleView:
        return prepare_samples(cfg.data, protocol_options(cfg, DCCLConfig).view(cfg.data))

    def phases(self) -> tuple[Phase, ...]:
        ask = (Phase(ITEMS),) if self.opt.item_rows == "needed" else ()
        return (*ask, Phase(FIT, available_only=True), Phase(DISTILL, device=False),
                Phase(EVALUATE, every=self.cfg.sim.eval_every, last=True, evaluates=True))

    # ------------------------------------------------------------------ cloud data
    @property
    def codes(self) -> np.ndarray:
        """Every user's profile codes [U, P] (the cloud may read them, Sec. 3.3); the activity
        profile (``activity_codes``) where the data has none."""
        prof = self.cloud.profiles
        if prof is None:
            owner = self.cloud.logs.owner
            return activity_codes(np.bincount(owner, minlength=self.cloud.n_devices))
        return prof.codes.astype(np.int64)

    def rows(self, rnd: int, epoch: int) -> CTRRows:
        """The cloud's rows of round ``rnd`` (0: the pre-training half) for ``epoch``."""
        o, d = self.opt, self.cfg.data
        return cloud_rows(self.cloud.logs, self.cloud.n_items, rnd, self.cfg.train.num_rounds,
                          o.history_len, o.negatives, d.seed, 1000 * (rnd + 1) + epoch)

    def model(self) -> PatchedDIN:
        sizes = tuple(int(s) for s in self.profile_sizes())
        model = build_model(self.opt, self.cloud.n_items, self.cloud.items, sizes,
                            seed=self.cfg.train.seed)
        return model

    def download(self, model: PatchedDIN) -> Arrays:
        return {**model_arrays(model), PROFILE_SIZES: self.profile_sizes()}

    def profile_sizes(self) -> np.ndarray:
        """Codes per profile column [P] (the activity profile: one column)."""
        prof = self.cloud.profiles
        return np.array([ACTIVITY_LEVELS] if prof is None else prof.sizes, np.int64)

    def onehot_all(self, model: PatchedDIN) -> torch.Tensor | None:
        codes = self.codes
        return None if codes is None else model.onehot(torch.from_numpy(codes))

    def starts(self, model: PatchedDIN) -> np.ndarray:
        """Every device's next starting metapatch U(theta, u) [U, K]."""
        with torch.no_grad():
            return model.encoder(torch.from_numpy(self.thetas), self.onehot_all(model)).numpy()

    def meta_fn(self, model: PatchedDIN, thetas: torch.Tensor) -> MetaFn:
        """Rows -> U(theta_owner, u_owner): the proxy device models of Eq. 7."""
        codes = self.codes

        def meta(rows: CTRRows) -> torch.Tensor:
            prof = None if codes is None else model.onehot(torch.from_numpy(codes[rows.owner]))
            return model.encoder(thetas[torch.from_numpy(rows.owner)], prof)
        return meta

    def train(self, model: PatchedDIN, names: list[str], rnd: int, epochs: int, meta: MetaFn,
              teacher: TeacherFn | None, what: str,
              rows_of: Callable[[int, int], CTRRows] | None = None) -> list[float]:
        """``fit_epochs`` of the parameters ``names`` on round ``rnd``'s cloud rows."""
        o, rows_of = self.opt, rows_of or self.rows
        say = None if self.cfg.output.quiet else (lambda m: print(f"dccl {what}: {m}", flush=True))
        return fit_epochs(model, names, lambda e: rows_of(rnd, e), self.codes, meta, teacher,
                          epochs=epochs, lr=o.cloud_lr, batch=o.cloud_batch, beta=o.beta,
                          seed=self.cfg.train.seed * 1000 + rnd, progress=say)

    # ------------------------------------------------------------------ Algorithm 1, line 1
    def init_global(self) -> Arrays:
        t0 = time.monotonic()
        model = self.model()
        self.thetas = np.zeros((self.cloud.n_devices, self.opt.meta_dim), np.float32)
        key = pretrain_key(self.cfg)
        if key not in PRETRAINED:      # f does not depend on K, beta, junctions or devices
            pre = self.train(model, model.backbone_names(), 0, self.opt.pretrain_epochs,
                             lambda rows: None, None, "pre-train f")
            PRETRAINED.clear()
            PRETRAINED[key] = ({n: model_arrays(model)[n] for n in model.backbone_names()}, pre)
        f_arrays, pre = PRETRAINED[key]
        load_arrays(model, {**model_arrays(model), **f_arrays})
        f0 = frozen_copy(model)
        teacher = lambda rows: row_logits(f0, rows, self.codes, lambda r: None)
        basis = self.train(model, model.basis_names(), 0, self.opt.basis_epochs,
                           self.meta_fn(model, torch.from_numpy(self.thetas)), teacher,
                           "pre-train Theta (theta = 0)")
        self.theta_start = self.starts(model)
        arrays = self.download(model)
        self.facts = {"pretrain_loss": pre, "basis_loss": basis,
                      "pretrain_s": time.monotonic() - t0, "download_bytes": nbytes(arrays),
                      "parameters_f": sum(p.numel() for n, p in model.named_parameters()
                                          if n in set(model.backbone_names())),
                      "parameters_theta": sum(b.numel() for b in model.basis),
                      "device_trainable": self.opt.meta_dim,
                      "direct_patch_parameters": model.patch_parameters()}
        return arrays

    # ------------------------------------------------------------------ the round
    def phase_broadcast(self, phase: Phase, rnd: int) -> Arrays:
        """f and Theta; without the item table when each device gets its own rows."""
        if phase.name == ITEMS:
            return {}
        if self.opt.item_rows == "needed":
            return {k: v for k, v in self.global_arrays.items() if k != ITEM_TABLE}
        return self.global_arrays

    def select(self, phase: Phase, rnd: int) -> list[int]:
        """The item-row requests come from every device of the round's fit or evaluation."""
        if phase.name != ITEMS:
            return super().select(phase, rnd)
        evaluating = any(p.evaluates for p in self.round_phases(rnd))
        ids = set(self.select_fit_devices(rnd)) | (
            set(self.select_eval_devices(rnd)) if evaluating else set())
        return sorted(ids)

    def on_phase(self, phase: Phase, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        """Keep each device's requested item ids (fit, evaluation) for this round."""
        asked = {r.device_id: (np.asarray(r.upload[ITEM_IDS], np.int64),
                               np.asarray(r.upload[EVAL_ITEM_IDS], np.int64)) for r in replies}
        self.requested = (rnd, asked)
        return {"rows_fit_mean": float(np.mean([len(f) for f, _ in asked.values()])),
                "rows_eval_mean": float(np.mean([len(e) for _, e in asked.values()]))}

    def phase_own(self, phase: Phase, rnd: int, device_ids: list[int]) -> dict[int, Arrays]:
        if phase.name not in (FIT, EVALUATE):
            return {}
        own = {d: {THETA_START: self.theta_start[d]} for d in device_ids}
        if self.opt.item_rows == "needed":
            asked_in, asked = self.requested
            if asked_in != rnd:
                raise RuntimeError(f"round {rnd}: no item-row requests this round (last in "
                                   f"round {asked_in}); the items phase must open every round")
            table = self.global_arrays[ITEM_TABLE]
            for d in device_ids:      # a device that did not ask gets none, and refuses to run
                if d in asked:
                    ids = asked[d][0 if phase.name == FIT else 1]
                    own[d].update({ITEM_IDS: ids.astype(np.int32), ITEM_ROWS: table[ids]})
        return own

    def round_config(self, rnd: int, kind: str) -> dict[str, Any]:
        last = rnd == self.cfg.train.num_rounds
        return {"full_ranking": bool(kind == EVALUATE and last and self.opt.full_ranking)}

    def aggregate(self, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        """Recycle the uploaded metapatches; report DCCL-e and pre-round f."""
        for r in replies:
            self.thetas[r.device_id] = r.upload[THETA]
            self.last_eval.setdefault(r.device_id, {}).update(r.metrics)
        return {k: v for k, v in mean_metrics(replies).items() if k != "loss"}

    def cloud_step(self, phase: Phase, rnd: int) -> dict[str, float]:
        """MoMoDistill (Eqs. 5-7) on round ``rnd``'s rows."""
        model = self.model()
        load_arrays(model, self.global_arrays)
        old, thetas = frozen_copy(model), torch.from_numpy(self.thetas)
        teacher = lambda rows: row_logits(
            old, rows, self.codes, lambda r: thetas[torch.from_numpy(r.owner)])
        # steps 1 and 2 read the same rows per epoch: with one epoch (the default) build them once
        rows_of = functools.lru_cache(maxsize=1)(self.rows)
        step1 = self.train(model, model.backbone_names(), rnd, self.opt.distill_epochs,
                           lambda rows: None, teacher, f"round {rnd} Eq. 5", rows_of)
        step2 = self.train(model, model.basis_names(), rnd, self.opt.distill_epochs,
                           self.meta_fn(model, thetas), teacher, f"round {rnd} Eq. 7", rows_of)
        self.theta_start = self.starts(model)
        self.global_arrays = self.download(model)
        return {"f_loss": step1[-1] if step1 else float("nan"),
                "basis_loss": step2[-1] if step2 else float("nan"),
                "rows": float(len(rows_of(rnd, 0)))}

    def on_evaluated(self, rnd: int, replies: list[DeviceReply]) -> None:
        for r in replies:
            self.last_eval.setdefault(r.device_id, {}).update(r.metrics)

    def finish(self) -> None:
        super().finish()
        self.write_facts()

    def write_facts(self) -> None:
        self.recorder.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.recorder.dir / "dccl_cloud.json", dumps(self.facts))
        if self.last_eval:
            keys = sorted({k for m in self.last_eval.values() for k in m})
            out = io.StringIO()
            w = csv.writer(out)
            w.writerow(["device_id", *keys])
            for d, m in sorted(self.last_eval.items()):
                w.writerow([d, *(m.get(k, "") for k in keys)])
            atomic_write(self.recorder.dir / "dccl_devices.csv", out.getvalue())
