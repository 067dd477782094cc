"""``PrivacyLedger``: the cloud side of local DP, as a mixin composed onto any strategy.

Devices wrapped in ``clients.ldp_device.LdpDevice`` report what they spent in each fit
reply (``ldp_epsilon``, ``ldp_delta``, ``ldp_scale``, ``ldp_sensitivity``,
``ldp_gaussian``); the ledger feeds them to ``strategies.accountant.PrivacyAccountant``
(basic composition for Laplace, RDP for Gaussian), adds the round's worst total to the
round record and writes ``privacy.json`` (per device: per-round spending and totals) to the
run directory at the end. The protocol's aggregation is untouched.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from clients.device import DeviceReply
from fedrec.results import atomic_write, dumps
from fedrec.threat_config import ThreatConfig
from strategies.accountant import PrivacyAccountant

PRIVACY_FILE = "privacy.json"


def record_replies(acc: PrivacyAccountant, rnd: int, replies: list[DeviceReply]) -> int:
    """Feed every reply that reports LDP spending to the accountant; returns how many did."""
    n = 0
    for r in replies:
        m = r.metrics
        if "ldp_epsilon" not in m:
            continue
        gaussian = m.get("ldp_gaussian", 0.0) == 1.0
        sens = m.get("ldp_sensitivity", 0.0)
        acc.record(rnd, r.device_id, "gaussian" if gaussian else "laplace", float(m["ldp_epsilon"]),
                   delta=float(m.get("ldp_delta", 0.0)),
                   noise_multiplier=m["ldp_scale"] / sens if gaussian and sens > 0 else None)
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
