"""``PrivacyLedger``: the cloud side of local DP, as a mixin composed onto any strategy.

Devices wrapped in ``clients.ldp_device.LdpDevice`` report what they spent in each fit
reply (a ``fedrec.ldp.NoiseReport`` as metrics, ``fedrec.ldp.report_metrics``); the ledger
feeds them to ``strategies.accountant.PrivacyAccountant`` (basic composition for Laplace,
RDP for Gaussian), adds the round's worst total to the
round record and writes ``privacy.json`` (per device: per-round spending and totals) to the
run directory at the end. The protocol's aggregation is untouched.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from fedrec.ldp import report_from_metrics
from fedrec.protocol import DeviceReply
from fedrec.results import atomic_write, dumps
from fedrec.threat_config import ThreatConfig
from strategies.accountant import PrivacyAccountant

PRIVACY_FILE = "privacy.json"


def record_replies(acc: PrivacyAccountant, rnd: int, replies: list[DeviceReply]) -> int:
    """Feed every reply that reports LDP spending to the accountant; returns how many did."""
    n = 0
    for r in replies:
        rep = report_from_metrics(r.metrics)
        if rep is None:
            continue
        gaussian = rep.mechanism == "gaussian"
        acc.record(rnd, r.device_id, rep.mechanism, rep.epsilon, delta=rep.delta,
                   noise_multiplier=rep.scale / rep.sensitivity
                   if gaussian and rep.sensitivity > 0 else None)
        n += 1
    return n


class PrivacyLedger:
    """Mixin (put before the strategy class): accountant over the devices' LDP reports."""

    threat: ClassVar[ThreatConfig]
    recorder: Any

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.accountant = PrivacyAccountant(delta=self.threat.ldp.delta)

    def aggregate(self, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        n = record_replies(self.accountant, rnd, replies)
        metrics = super().aggregate(rnd, replies)  # type: ignore[misc]
        totals = [self.accountant.device_total(d) for d in self.accountant.ledgers]
        finite = [t for t in totals if not math.isinf(t)]
        return {**metrics, "ldp_reports": float(n), "ldp_max_epsilon": max(finite, default=0.0),
                "ldp_unprotected": float(len(totals) - len(finite))}

    def finish(self) -> None:
        super().finish()  # type: ignore[misc]
        self.write_privacy()

    def write_privacy(self) -> None:
        self.recorder.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.recorder.dir / PRIVACY_FILE, dumps(self.accountant.report()))
