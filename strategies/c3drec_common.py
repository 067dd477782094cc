"""The cloud side shared by C3DRec's pull and push modes (Han & Ma 2021, Sec. 3).

Before round 1 (in ``init_global``, not federated): the cloud trains the global GRU4Rec on
the click sessions of *old* users before T_device (the only clicks it may process), with
AGP to ``c3drec-model-sparsity`` and the mode's sparse layer (Eq. 3), and builds every
user's item-CF candidate set from the transactional matrix. Each round, every selected
device downloads the pruned model (sparse encoding) and fine-tunes its personal model on its
own post-T_device clicks (``clients.c3drec_device``); the modes differ in what travels next
(``strategies.c3drec_pull`` / ``strategies.c3drec_push``).

Facts about the cloud step (training loss and time, sparsity, gamma, model bytes in every
encoding) are written to ``<run dir>/c3drec_cloud.json``. Nothing is cached on disk.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np

from clients.c3drec_device import CAND, CAND_EMB, C3DRecDevice, require_gru4rec
from fedrec.c3drec.config import PREFIX, C3DRecConfig
from fedrec.c3drec.pipeline import (
    GlobalModel,
    candidates,
    item_table,
    model_payload,
    pretrain_global,
)
from fedrec.c3drec.sparsify import KINDS, encode_tensors, raw_nbytes, sparsity
from fedrec.c3drec.timeline import TimelineData, build_timeline
from fedrec.config import DataConfig, RunConfig, protocol_options
from fedrec.federated import load_for_run
from fedrec.payload import fingerprint, nbytes
from fedrec.protocol import Arrays
from fedrec.results import RunRecorder, atomic_write, dumps
from strategies.base import DeviceStrategy


@functools.lru_cache(maxsize=4)
def prepare_timeline(data: DataConfig, c3: C3DRecConfig) -> TimelineData:
    """Load and stage the run's dataset once per process (cached by config)."""
    return build_timeline(load_for_run(data), c3.timeline(data.seed, data.max_devices))


class C3DRecBase(DeviceStrategy):
    """Cloud pre-training, candidate sets and the model download; subclasses set ``mode``."""

    mode: ClassVar[str] = "pull"
    device_cls: ClassVar[type[C3DRecDevice]] = C3DRecDevice
    default_model = "gru4rec"
    select_metric = "test_recall@20"
    options = C3DRecConfig
    prefix = PREFIX
    #: pre-trained before round 1, deterministically: rebuilt on resume, not checkpointed
    rebuilt = frozenset({"gm", "cands", "global_arrays", "c3", "items"})

    def __init__(self, *, cfg: RunConfig, fed: TimelineData, recorder: RunRecorder) -> None:
        self.c3 = protocol_options(cfg, C3DRecConfig)
        super().__init__(cfg=cfg, fed=fed, recorder=recorder)

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        require_gru4rec(cfg.train.model)

    @classmethod
    def prepare_data(cls, cfg: RunConfig) -> TimelineData:
        return prepare_timeline(cfg.data, protocol_options(cfg, C3DRecConfig))

    def init_global(self) -> Arrays:
        """Train the global model and the candidate sets in the cloud; return the download."""
        self.gm: GlobalModel = pretrain_global(self.cloud.cloud_pre.all(), self.cloud.n_items,
                                               self.c3, self.mode, self.cfg.train.seed)
        self.cands = candidates(self.cloud, self.c3)
        self.items = item_table(self.gm)         # as served; every pull download takes rows
        payload = model_payload(self.gm, self.c3.encoding)
        payload["gamma"] = np.array([self.gm.gamma])
        payload["model_id"] = np.array([fingerprint(payload)], dtype=np.int64)
        self.write_cloud_facts(payload)
        return payload

    def eval_broadcast(self, rnd: int) -> Arrays:
        return {}   # evaluation messages carry only per-device results (see the modes)

    def candidate_payload(self, d: int) -> Arrays:
        """Pull download of device ``d``: candidate ids and their served item embeddings."""
        cand = self.cands[d]
        emb = self.items[cand]
        return {CAND: cand.astype(np.int32), **encode_tensors({CAND_EMB: emb}, self.c3.encoding)}

    def write_cloud_facts(self, payload: Arrays) -> None:
        self.recorder.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.recorder.dir / "c3drec_cloud.json", dumps(self.cloud_facts(payload)))

    def cloud_facts(self, payload: Arrays) -> dict[str, Any]:
        g = self.gm
        sizes = {k: raw_nbytes(model_payload(g, k)) for k in KINDS}
        return {
            "mode": self.mode, "train_loss": g.loss, "train_events": g.events,
            "train_seconds": g.seconds, "gamma": g.gamma,
            "model_sparsity": {n: 1.0 - float(m.mean()) for n, m in g.masks.items()},
            "item_embedding_sparsity": sparsity(self.items),
            "model_bytes_wire": nbytes(payload), "model_bytes_by_encoding": sizes,
            "candidates_mean": float(np.mean([len(c) for c in self.cands])),
            "n_devices": self.cloud.n_devices, "n_items": self.cloud.n_items,
            "new_devices": int(self.cloud.is_new.sum()),
            "cloud_sessions": len(self.cloud.cloud_pre), "cloud_events": self.cloud.cloud_pre.n_events,
        }
