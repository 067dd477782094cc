"""C3DRec push mode (Han & Ma 2021, Fig. 2): user embeddings are pushed up, the cloud ranks.

Fit round: every selected device downloads the pruned global model, fine-tunes its personal
model and uploads its sparsified user embeddings (threshold gamma + L1 on the GRU output,
Eq. 3; one per recommendation request, i.e. per held-out click, from the clicks before it on
the device). The cloud scores each device's item-CF candidates with its item embeddings and
keeps the top-K lists. Evaluation round: each device downloads its lists and scores them
against its held-out clicks. Shared parts: ``strategies.c3drec_common``.
"""

from __future__ import annotations

import numpy as np

from clients.c3drec_device import TOPK, UEMB, C3DRecPushDevice
from clients.device import Arrays, DeviceReply
from fedrec.c3drec.pipeline import cloud_topk
from fedrec.c3drec.sparsify import decode_tensors
from strategies.c3drec_common import C3DRecBase


class C3DRecPush(C3DRecBase):
    name = "c3drec-push"
    mode = "push"
    device_cls = C3DRecPushDevice

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.topk: dict[int, np.ndarray] = {}

    def aggregate(self, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        """Rank each device's candidates for each of its uploaded user embeddings."""
        zeros = []
        for r in replies:
            if not r.upload:
                continue
            u = decode_tensors(r.upload)[0][UEMB]                      # [E, H]
            self.topk[r.device_id] = cloud_topk(u, self.gm, self.cands[r.device_id], self.c3.topk)
            zeros.append(float((u == 0).mean()))
        return {"uploads": float(len(zeros)),
                "user_emb_sparsity": float(np.mean(zeros)) if zeros else float("nan")}

    def eval_own(self, rnd: int, device_ids: list[int]) -> dict[int, Arrays]:
        return {d: {TOPK: self.topk[d].astype(np.int32)} for d in device_ids if d in self.topk}
