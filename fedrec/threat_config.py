"""Run-config sections of the threat model: local DP, attackers, defences (issue 5).

Each section is switched on by one key (``ldp``, ``attack``, ``defence``; ``"none"`` = off)
and tuned by keys with that prefix (``ldp-bound``, ``attack-fraction``, ``defence-beta``);
defaults live in ``pyproject.toml`` like every other key. ``parse_threat_config`` reads the
flat run-config once; ``experiments.setup.with_threats`` composes the wrappers from it.
No algorithm reads these keys: LDP and attackers wrap the device logic, defences wrap the
strategy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedrec.config import parse_section
from fedrec.errors import ConfigError

LDP_MECHANISMS = ("none", "laplace", "gaussian")
#: targeted attacks promote the target items; untargeted ones degrade every user's list
TARGETED_ATTACKS = ("fake-random", "fake-popular", "pipattack", "fedrecattack", "psmu", "scaled")
UNTARGETED_ATTACKS = ("noise", "signflip")
ATTACKS = ("none", *TARGETED_ATTACKS, *UNTARGETED_ATTACKS)
DEFENCES = ("none", "median", "trimmed-mean", "norm-bound", "krum", "multi-krum", "hics")
#: the keys that switch a section on; its options are the keys "<switch>-<field>"
SWITCHES = ("ldp", "attack", "defence")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    _check(value in allowed, f"{key} = {value!r} is not known; use one of {', '.join(allowed)}")


@dataclass(frozen=True)
class LdpConfig:
    """Local DP of every device upload (keys ``ldp``, ``ldp-<field>``).

    mechanism: "none", "laplace" (pure eps) or "gaussian" ((eps, delta), analytic sigma).
    clip / bound: clipping unit ("upload" = joint L2, "row", "coord") and its bound C.
    epsilon_mix: per-device budgets per round, "eps:share,..." (privacy heterogeneity).
    """

    mechanism: str = "none"
    clip: str = "upload"
    bound: float = 1.0
    epsilon_mix: str = "1:1"
    delta: float = 1e-5
    gaussian_method: str = "analytic"

    def __post_init__(self) -> None:
        _one_of("ldp", self.mechanism, LDP_MECHANISMS)


@dataclass(frozen=True)
class AttackConfig:
    """Malicious devices (keys ``attack``, ``attack-<field>``).

    fraction: share of ALL devices that are malicious (exact count round(fraction * n),
    at least 1 when fraction > 0); targets: number k of target items (unpopular, seeded).
    filler: items of a fake profile besides the targets (0 = as many as the device's real
    training items); popular: the top-N popular items the "popular" attacks use.
    scale: multiplier of crafted updates; public_share / public_users: FedRecAttack's
    public interactions (share of each benign user's items, at most this many users);
    noise_std: std of the "noise" attack's uploads.
    """

    kind: str = "none"
    fraction: float = 0.01
    targets: int = 1
    filler: int = 0
    popular: int = 50
    scale: float = 1.0
    public_share: float = 0.1
    public_users: int = 256
    noise_std: float = 0.1

    def __post_init__(self) -> None:
        _one_of("attack", self.kind, ATTACKS)
        _check(0.0 <= self.fraction < 1.0, "attack-fraction must be in [0, 1)")
        _check(self.targets >= 1, "attack-targets must be >= 1")
        _check(self.filler >= 0 and self.popular >= 1, "attack-filler >= 0, attack-popular >= 1")
        _check(self.scale > 0 and self.noise_std > 0, "attack-scale and attack-noise-std must be > 0")
        _check(0.0 < self.public_share <= 1.0, "attack-public-share must be in (0, 1]")
        _check(self.public_users >= 1, "attack-public-users must be >= 1")

    @property
    def targeted(self) -> bool:
        return self.kind in TARGETED_ATTACKS


@dataclass(frozen=True)
class DefenceConfig:
    """Robust aggregation on the cloud (keys ``defence``, ``defence-<field>``).

    beta: trimmed-mean share cut per side; bound: norm-bound L2 bound per device upload;
    krum_fraction: share f/n of uploads Krum assumes malicious (Multi-Krum keeps n - f);
    hics_row_bound / hics_agg_bound / hics_keep: HiCS stage-1 row bound, stage-2 bound of a
    row's mean, share of touched rows updated (strategies.robust.hics).
    """

    kind: str = "none"
    beta: float = 0.1
    bound: float = 1.0
    krum_fraction: float = 0.05
    hics_row_bound: float = 0.1
    hics_agg_bound: float = 0.05
    hics_keep: float = 0.5

    def __post_init__(self) -> None:
        _one_of("defence", self.kind, DEFENCES)
        _check(0.0 <= self.beta < 0.5, "defence-beta must be in [0, 0.5)")
        _check(self.bound > 0, "defence-bound must be > 0")
        _check(0.0 <= self.krum_fraction < 0.5, "defence-krum-fraction must be in [0, 0.5)")
        _check(self.hics_row_bound > 0 and self.hics_agg_bound > 0,
               "defence-hics-row-bound and defence-hics-agg-bound must be > 0")
        _check(0.0 < self.hics_keep <= 1.0, "defence-hics-keep must be in (0, 1]")


@dataclass(frozen=True)
class ThreatConfig:
    ldp: LdpConfig = field(default_factory=LdpConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    defence: DefenceConfig = field(default_factory=DefenceConfig)

    @property
    def clean(self) -> bool:
        """True when nothing is switched on: the protocol runs unwrapped."""
        return (self.ldp.mechanism, self.attack.kind, self.defence.kind) == ("none",) * 3


def _section(cls: type, flat: Mapping[str, Any], switch: str, first: str) -> Any:
    """``cls`` from keys ``<switch>-<field>``; its first field ``first`` from key ``switch``."""
    obj: Any = parse_section(cls, {k: v for k, v in flat.items() if k != f"{switch}-{first}"},
                        prefix=f"{switch}-")
    return dataclasses.replace(obj, **{first: str(flat.get(switch, getattr(obj, first)))})


def parse_threat_config(flat: Mapping[str, Any]) -> ThreatConfig:
    """The three sections from a flat run-config (missing keys keep their defaults)."""
    return ThreatConfig(
        ldp=_section(LdpConfig, flat, "ldp", "mechanism"),
        attack=_section(AttackConfig, flat, "attack", "kind"),
        defence=_section(DefenceConfig, flat, "defence", "kind"),
    )
