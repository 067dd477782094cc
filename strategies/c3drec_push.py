"""C3DRec push mode (Han & Ma 2021, Fig. 2): user embeddings are pushed up, the cloud ranks.

A round has four phases:

1. ``fit`` (devices): every selected device downloads the pruned global model, fine-tunes its
   personal model and uploads its sparsified user embeddings (threshold gamma + L1 on the GRU
   output, Eq. 3; one per recommendation request, i.e. per held-out click, from the clicks
   before it on the device);
2. ``rank`` (cloud only): the cloud scores each uploading device's item-CF candidates with
   its item embeddings and keeps the top-K lists;
3. ``serve`` (devices): the lists go down to their devices, which keep them;
4. ``evaluate`` (devices): each device scores its lists against its held-out clicks.

Shared parts: ``strategies.c3drec_common``.
"""

from __future__ import annotations

import numpy as np

from clients.c3drec_device import SERVE, TOPK, UEMB, C3DRecPushDevice
from fedrec.c3drec.pipeline import cloud_topk
from fedrec.c3drec.sparsify import decode_tensors
from fedrec.protocol import EVALUATE, FIT, Arrays, DeviceReply
from strategies.base import Phase
from strategies.c3drec_common import C3DRecBase

RANK = "rank"


class C3DRecPush(C3DRecBase):
    name = "c3drec-push"
    mode = "push"
    device_cls = C3DRecPushDevice

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.topk: dict[int, np.ndarray] = {}
        self._uploads: dict[int, np.ndarray] = {}   # fit -> rank: device -> user embeddings
        self._served: list[int] = []                # rank -> serve: devices with new lists

    def phases(self) -> tuple[Phase, ...]:
        return (Phase(FIT, available_only=True), Phase(RANK, device=False), Phase(SERVE),
                Phase(EVALUATE, every=self.cfg.sim.eval_every, last=True, evaluates=True))

    def aggregate(self, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        """Keep the uploaded user embeddings for the ``rank`` step."""
        self._uploads = {r.device_id: decode_tensors(r.upload)[0][UEMB] for r in replies
                         if r.upload}                                    # device -> [E, H]
        zeros = [float((u == 0).mean()) for u in self._uploads.values()]
        return {"uploads": float(len(zeros)),
                "user_emb_sparsity": float(np.mean(zeros)) if zeros else float("nan")}

    def cloud_step(self, phase: Phase, rnd: int) -> dict[str, float]:
        """Rank each uploading device's candidates for each of its user embeddings."""
        for d, u in sorted(self._uploads.items()):
            self.topk[d] = cloud_topk(u, self.gm, self.cands[d], self.c3.topk)
        self._served, self._uploads = sorted(self._uploads), {}
        return {"devices": float(len(self._served))}

    def select(self, phase: Phase, rnd: int) -> list[int]:
        if phase.name == SERVE:
            return list(self._served)                    # the devices ranked this round
        return super().select(phase, rnd)

    def phase_own(self, phase: Phase, rnd: int, device_ids: list[int]) -> dict[int, Arrays]:
        if phase.name == SERVE:
            return {d: {TOPK: self.topk[d].astype(np.int32)} for d in device_ids}
        return super().phase_own(phase, rnd, device_ids)

    def on_phase(self, phase: Phase, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        return {"devices": float(len(replies))}
