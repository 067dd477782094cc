"""C3DRec pull mode (Han & Ma 2021, Fig. 1): candidates are pulled down and ranked on the device.

Fit round: every selected device downloads the pruned global model and its own candidate
set (item-CF, cloud side) with the sparsified item embeddings (threshold gamma + L1, Eq. 3),
fine-tunes its personal model, ranks the candidates locally and uploads nothing. Evaluation
round: the devices score their stored top-K lists against their held-out clicks.
Shared parts: ``strategies.c3drec_common``; device side: ``clients.c3drec_device``.
"""

from __future__ import annotations

from clients.c3drec_device import C3DRecPullDevice
from fedrec.config import RunConfig
from fedrec.errors import ConfigError, FedrecError
from fedrec.protocol import Arrays, DeviceReply
from fedrec.threat_config import parse_threat_config
from strategies.c3drec_common import C3DRecBase


class C3DRecPull(C3DRecBase):
    name = "c3drec-pull"
    mode = "pull"
    device_cls = C3DRecPullDevice

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        """Local DP protects uploads; a pull device uploads nothing, so it would only be charged
        privacy budget."""
        super().check(cfg)
        ldp = parse_threat_config(cfg.raw_dict()).ldp.mechanism
        if ldp != "none":
            raise ConfigError(f"ldp={ldp} protects device uploads, but c3drec-pull devices upload "
                              "nothing; use strategy=c3drec-push, or ldp=none")

    def fit_own(self, rnd: int, device_ids: list[int]) -> dict[int, Arrays]:
        return {d: self.candidate_payload(d) for d in device_ids}

    def aggregate(self, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        """Nothing to aggregate: a pull device uploads nothing (checked)."""
        sent = [r.device_id for r in replies if r.upload]
        if sent:
            raise FedrecError(f"pull-mode devices {sent[:5]} uploaded data; pull devices must "
                              "upload nothing (check clients.c3drec_device)")
        return {}
