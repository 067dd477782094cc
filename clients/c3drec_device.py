"""C3DRec's on-device half, pull and push modes (Han & Ma 2021, Sec. 3.1, Figs. 1-2).

Fit (one round of personal training):
1. decode the downloaded (pruned, sparsely encoded) global model and its gamma;
2. rebuild the personal model: global arrays + the device's own stored delta;
3. fine-tune the user side (input item table, GRU) and, with ``c3drec-device-items``, the
   item embeddings of its own clicked items, on its clicks in [T_device, T_test), for
   ``local-epochs`` epochs, ``c3drec-device-batch`` clicks per update, pruned weights at zero;
4. recommend for every held-out click (the state after the session's previous clicks):
   * pull: rank the downloaded candidate set with its sparsified item embeddings (its own
     personal rows for its own items), locally; upload nothing;
   * push: upload the sparsified user embeddings (one per recommendation request), nothing
     else; the cloud ranks the candidates with its item embeddings (personal item rows never
     leave the device) and returns the top-K lists in the evaluation message.
5. keep in the device state: the personal delta (sparse) and the recommendation lists.

Evaluate: compare the lists with the held-out clicks (Recall@K, MRR@K over the candidate
set; "all_" keys: the personal model over all items, computed on the device). Only these
scalars leave the device, as the simulation's measurement.

A cohort's fit (``run_many``) is one batched computation over per-device parameter copies
(``fedrec.c3drec.personalise``); ``fit`` is the per-device reference it equals up to float
rounding (tests/c3drec/test_batched.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch

from clients.device import DeviceLogic
from fedrec.c3drec import costs
from fedrec.c3drec.cohort import DeviceInput
from fedrec.c3drec.config import C3DRecConfig
from fedrec.c3drec.personalise import personalise_many
from fedrec.c3drec.pipeline import (
    OUT,
    device_topk,
    finetune,
    metrics,
    own_items,
    personal_model,
    personal_state,
    read_model,
)
from fedrec.c3drec.rank_many import DeviceRanking
from fedrec.c3drec.sparsify import decode_tensors, encode_tensors
from fedrec.c3drec.train import next_click_events
from fedrec.config import protocol_options
from fedrec.errors import ConfigError
from fedrec.models.gru4rec import GRU4Rec
from fedrec.protocol import FIT, Arrays, DeviceReply, DeviceTask

UEMB = "uemb"        # push upload: the sparsified user embeddings [E, H]
CAND = "cand"        # pull download: candidate item ids [C]
CAND_EMB = "cemb"    # pull download: their sparsified item embeddings [C, H]
TOPK = "topk"        # push download / pull state: top-K over the candidates [E, K]
SERVE = "serve"      # push mode's phase that brings the cloud's top-K lists down
TOPK_ALL = "topk_all"


def require_gru4rec(model: str) -> None:
    """The run's ``model`` key must name GRU4Rec (or be empty)."""
    if model not in ("", "gru4rec"):
        raise ConfigError(f"c3drec trains GRU4Rec, not model={model!r}; drop the model key")


class C3DRecDevice(DeviceLogic):
    """Personal fine-tuning and recommendation of one device; ``mode`` is pull or push.

    Its evaluation is event-level (a recommendation per held-out click, from the session so
    far) and in push mode the cloud ranks the candidates, so the device holds top-K lists, not
    scores: ``evaluate`` turns the lists into ranks (``fedrec.evaluation.ranks_from_topk``).
    """

    mode: ClassVar[str] = "pull"
    scored_model = "personalised"   # the global model + the device's own stored delta

    def __init__(self, cfg, fed) -> None:
        super().__init__(cfg, fed)
        require_gru4rec(cfg.train.model)
        self.c3 = protocol_options(cfg, C3DRecConfig)
        self._model: GRU4Rec | None = None
        self._decoded: tuple[int, Arrays, dict[str, np.ndarray]] | None = None
        self._dens: dict[str, float] = {}   # kept share per pruned tensor, of _decoded

    def global_model(self, broadcast: Arrays) -> tuple[Arrays, dict[str, np.ndarray]]:
        """Decoded global arrays and masks, cached by the model's fingerprint."""
        key = int(broadcast["model_id"][0])
        if self._decoded is None or self._decoded[0] != key:
            self._decoded = (key, *read_model(broadcast))
            self._dens = {n: float(m.mean()) for n, m in self._decoded[2].items()}
        return self._decoded[1], self._decoded[2]

    def fit(self, task: DeviceTask) -> DeviceReply:
        """One device, one model at a time: the reference ``fit_many`` is tested against."""
        torch.set_num_threads(1)
        arrays, masks = self.global_model(task.broadcast)
        gamma = float(task.broadcast["gamma"][0])
        data = self.fed.device(task.device_id)
        model = personal_model(arrays, task.state, self.c3, self._model)
        self._model = model
        res = finetune(model, data.train, self.c3, self.mode, gamma, masks, task.rng,
                       self.cfg.train.local_epochs)
        state = personal_state(model, arrays, self.c3)
        cand, cand_emb = self.candidates(task)
        spec = self.c3.sparse(self.mode, gamma)
        rec = device_topk(model, data.test, self.c3, spec,
                          np.zeros(0, np.int64) if cand is None else cand, cand_emb,
                          own_items(data.train, self.c3) if cand is not None else None)
        ranking = DeviceRanking(rec["targets"], rec["user_emb"],
                                None if cand is None else rec["topk"], rec["topk_all"])
        upload = self.keep(ranking, state)
        return self.reply(task, res.loss, res.events, ranking, state, upload,
                          arrays[OUT].shape[0])

    def run_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        """A cohort's fit as one batched computation (``fit_many``); other phases per device."""
        if {t.kind for t in tasks} == {FIT}:
            return self.fit_many(tasks)
        return super().run_many(tasks)

    def fit_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        """``fit`` of every task, fine-tuned and ranked together
        (``fedrec.c3drec.personalise``); the same replies up to float rounding."""
        torch.set_num_threads(1)
        if len({int(t.broadcast["model_id"][0]) for t in tasks}) > 1:
            raise ValueError("a C3DRec cohort must share one downloaded model")
        arrays, masks = self.global_model(tasks[0].broadcast)
        gamma = float(tasks[0].broadcast["gamma"][0])
        data = [self.fed.device(t.device_id) for t in tasks]
        inputs = [DeviceInput(d.train, d.test, t.state, t.rng, *self.candidates(t))
                  for t, d in zip(tasks, data, strict=True)]
        found = personalise_many(arrays, masks, self.c3, self.mode, gamma,
                                 self.cfg.train.local_epochs, inputs)
        replies, n_items = [], arrays[OUT].shape[0]
        for t, o in zip(tasks, found, strict=True):
            upload = self.keep(o.ranking, o.state)
            replies.append(self.reply(t, o.loss, o.events, o.ranking, o.state, upload, n_items))
        return replies

    def candidates(self, task: DeviceTask) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Pull: the downloaded candidate ids [C] and their item embeddings [C, H]."""
        if self.mode != "pull":
            return None, None
        emb, _ = decode_tensors(task.own, "")
        return task.own[CAND].astype(np.int64), emb.get(CAND_EMB)

    def keep(self, r: DeviceRanking, state: Arrays) -> Arrays:
        """Mode-specific step 4 (module docstring): fills ``state``, returns the upload."""
        if r.topk is not None:                                   # pull
            state[TOPK] = r.topk.astype(np.int32)
            state[TOPK_ALL] = r.topk_all.astype(np.int32)
            return {}
        state[TOPK_ALL] = r.topk_all.astype(np.int32)
        if len(r.targets) == 0:
            return {}
        return encode_tensors({UEMB: r.user_emb}, self.c3.encoding)

    def reply(self, task: DeviceTask, loss: float, events: int, r: DeviceRanking,
              state: Arrays, upload: Arrays, n_items: int) -> DeviceReply:
        """The fit reply: state, upload, loss and the simulated costs."""
        n_cand = len(task.own[CAND]) if self.mode == "pull" else 0
        dens, E, H = self._dens, self.c3.embedding_dim, self.c3.hidden_dim
        n_test = len(r.targets)
        return DeviceReply(
            device_id=task.device_id, upload=upload, state=state,
            metrics={"loss": loss} if events else {}, num_examples=events,
            flops=costs.train_flops(events, n_items, E, H, dens)
            + costs.rank_flops(n_test, n_cand, E, H, dens),
            peak_mem_bytes=costs.train_memory_bytes(n_items, E, H, self.c3.device_batch, n_cand,
                                                   self.c3.device_items),
        )

    def evaluate(self, task: DeviceTask) -> DeviceReply:
        data = self.fed.device(task.device_id)
        _, targets = next_click_events(data.test, self.c3.max_len)
        state = task.state or {}
        topk = state.get(TOPK)
        if topk is None or TOPK_ALL not in state or len(targets) == 0:
            return DeviceReply(device_id=task.device_id)      # never trained, or nothing held out
        group = "new" if data.is_new else "old"
        m = metrics(np.asarray(topk, np.int64), state[TOPK_ALL].astype(np.int64), targets,
                    self.c3.topk, group)
        return DeviceReply(device_id=task.device_id, metrics=m)


class C3DRecPullDevice(C3DRecDevice):
    mode = "pull"


class C3DRecPushDevice(C3DRecDevice):
    mode = "push"

    def handlers(self) -> dict[str, Callable[[DeviceTask], DeviceReply]]:
        return {**super().handlers(), SERVE: self.serve}

    def serve(self, task: DeviceTask) -> DeviceReply:
        """Keep the top-K lists the cloud ranked for this device (``serve`` phase)."""
        state = {**(task.state or {}), TOPK: np.asarray(task.own[TOPK], np.int32)}
        return DeviceReply(device_id=task.device_id, state=state)
