"""Privacy accounting of local DP per device: what each device spent per round and in total.

* Laplace (pure eps-LDP): basic composition, total = sum of the per-round epsilons.
* Gaussian: Renyi DP (Mironov, "Renyi Differential Privacy", CSF 2017). One use with noise
  multiplier z = sigma / L2-sensitivity is (alpha, alpha / (2 z^2))-RDP; RDP composes
  additively over rounds; the total is converted to (eps, delta) with
  eps = min_alpha  rdp(alpha) + log(1/delta) / (alpha - 1)   (Mironov 2017, Prop. 3).
* A device that used both mechanisms: eps_total = eps_laplace + eps_gaussian at the same
  delta (basic composition of the two parts).
* A device that uploaded without noise (epsilon = inf) has spent inf.

The math is in pure functions; ``PrivacyAccountant`` only keeps the per-device ledger and
writes a JSON-able report (inf is written as the string "inf").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fedrec.errors import ConfigError

#: RDP orders, the grid Opacus uses: 1.1 .. 10.9 by 0.1, then 12 .. 63.
DEFAULT_ALPHAS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)]
                                          + [float(a) for a in range(12, 64)])


def gaussian_rdp(alphas: np.ndarray, noise_multiplier: float) -> np.ndarray:
    """RDP of one Gaussian release: alpha / (2 z^2) for each order. float64 [A]."""
    if not noise_multiplier > 0:
        raise ConfigError(f"noise multiplier must be > 0, got {noise_multiplier}")
    return np.asarray(alphas, dtype=np.float64) / (2.0 * noise_multiplier**2)


def rdp_to_dp(rdp: np.ndarray, alphas: np.ndarray, delta: float) -> tuple[float, float]:
    """(epsilon, best alpha) = min over alpha of rdp + log(1/delta) / (alpha - 1)."""
    if not 0 < delta < 1:
        raise ConfigError(f"target delta must be in (0, 1), got {delta}; e.g. 1e-5")
    a = np.asarray(alphas, dtype=np.float64)
    eps = np.asarray(rdp, dtype=np.float64) + math.log(1.0 / delta) / (a - 1.0)  # [A]
    best = int(np.argmin(eps))
    return float(eps[best]), float(a[best])


def _json(x: float) -> float | str:
    return "inf" if math.isinf(x) else x


@dataclass
class _Ledger:
    """One device's spending: Laplace eps sum, Gaussian RDP vector, per-round entries."""

    laplace: float = 0.0
    rdp: np.ndarray | None = None
    unprotected: bool = False
    rounds: list[dict] = field(default_factory=list)


@dataclass
class PrivacyAccountant:
    """Per-device privacy ledger; totals at ``delta`` for the Gaussian (RDP) part.

    Parameters
    ----------
    delta : target delta of the reported (eps, delta) for Gaussian totals.
    alphas : RDP orders (> 1) to minimise the conversion over.
    """

    delta: float = 1e-5
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    ledgers: dict[int, _Ledger] = field(default_factory=dict)

    def record(self, rnd: int, device_id: int, mechanism: str, epsilon: float,
               delta: float = 0.0, noise_multiplier: float | None = None) -> None:
        """One device's release in round ``rnd``.

        mechanism "laplace": epsilon is spent (pure). "gaussian": noise_multiplier
        (sigma / L2 sensitivity) is accounted by RDP; (epsilon, delta) is the nominal
        per-round calibration, reported as the round's spending. epsilon = inf: no noise.
        """
        if mechanism not in ("laplace", "gaussian"):
            raise ConfigError(f"unknown mechanism {mechanism!r}; use laplace or gaussian")
        if mechanism == "gaussian" and noise_multiplier is None and not math.isinf(epsilon):
            raise ConfigError("a Gaussian release needs its noise multiplier for RDP")
        book = self.ledgers.setdefault(int(device_id), _Ledger())
        if math.isinf(epsilon):
            book.unprotected = True
        elif mechanism == "laplace":
            book.laplace += epsilon
        elif noise_multiplier is not None:       # Gaussian (its multiplier is checked above)
            add = gaussian_rdp(np.asarray(self.alphas), noise_multiplier)
            book.rdp = add if book.rdp is None else book.rdp + add
        book.rounds.append({"round": int(rnd), "mechanism": mechanism, "epsilon": _json(epsilon),
                            "delta": delta, "total_epsilon": _json(self.device_total(device_id))})

    def gaussian_total(self, device_id: int) -> float:
        """Gaussian part of a device's total at ``self.delta`` via RDP (0 if none)."""
        book = self.ledgers.get(int(device_id), _Ledger())
        if book.rdp is None:
            return 0.0
        return rdp_to_dp(book.rdp, np.asarray(self.alphas), self.delta)[0]

    def device_total(self, device_id: int) -> float:
        """eps spent by a device so far (Laplace sum + Gaussian RDP total; inf if unprotected)."""
        book = self.ledgers.get(int(device_id), _Ledger())
        if book.unprotected:
            return math.inf
        return book.laplace + self.gaussian_total(device_id)

    def report(self) -> dict:
        """JSON-able summary: per device (rounds, totals), max over devices, delta."""
        per_device = {
            str(d): {"total_epsilon": _json(self.device_total(d)), "laplace_epsilon": b.laplace,
                     "gaussian_epsilon": self.gaussian_total(d), "rounds": b.rounds}
            for d, b in sorted(self.ledgers.items())
        }
        totals = {d: self.device_total(d) for d in self.ledgers}
        finite = [v for v in totals.values() if not math.isinf(v)]
        worst = max(totals, key=lambda d: (totals[d], -d)) if totals else None
        return {
            "delta": self.delta,
            "composition": {"laplace": "basic (sum)", "gaussian": "RDP"},
            "n_devices": len(totals),
            "max_epsilon": _json(totals[worst]) if worst is not None else 0.0,
            "max_device": worst,
            "max_finite_epsilon": max(finite, default=0.0),
            "n_unprotected": len(totals) - len(finite),
            "per_device": per_device,
        }
