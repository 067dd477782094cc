"""Everything the Server- and ClientApp need from a flat run-config, resolved once.

``effective_config`` fills keys missing from ``context.run_config`` with the defaults in
``pyproject.toml`` ([tool.flwr.app.config]); ``flwr run`` passes them all already, while
``flwr.simulation.run_simulation`` passes none, so both paths see the same values.
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clients.threat_device import ldp_spec, threat_device_cls
from experiments.checks import check_threats
from fedrec.config import RunConfig, parse_run_config
from fedrec.devices import assign_profiles, parse_tier_mix
from fedrec.threat_config import ThreatConfig, parse_threat_config
from strategies.base import DeviceStrategy
from strategies.defences import RobustAggregation
from strategies.privacy import PrivacyLedger
from strategies.registry import resolve_strategy

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@functools.lru_cache(maxsize=1)
def pyproject_defaults() -> dict[str, Any]:
    with PYPROJECT.open("rb") as fh:
        return dict(tomllib.load(fh)["tool"]["flwr"]["app"]["config"])


def effective_config(run_config: Mapping[str, Any], overrides: Mapping[str, Any] = {}) -> dict[str, Any]:
    return {**pyproject_defaults(), **dict(run_config), **dict(overrides)}


@functools.lru_cache(maxsize=8)
def _parsed(items: tuple[tuple[str, Any], ...]) -> tuple[RunConfig, type[DeviceStrategy]]:
    flat = dict(items)
    cls = resolve_strategy(str(flat.get("strategy", "fedmf")))
    cfg = parse_run_config(flat, extra_keys=set(pyproject_defaults()), options=cls.options,
                           prefix=cls.prefix)
    if cfg.train.lr == 0:  # the strategy's own default step size
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=cls.default_lr))
    threat = parse_threat_config(flat)
    check_threats(cls, threat, cfg.strategy)
    cls.check(cfg)
    return cfg, with_threats(cls, threat)


def with_threats(cls: type[DeviceStrategy], threat: ThreatConfig) -> type[DeviceStrategy]:
    """The one composition point of LDP, attackers and defences (issue 5).

    Returns ``cls`` itself when nothing is switched on; otherwise a subclass whose devices
    run the wrapped logic (clients.threat_device) and whose aggregation goes through the
    PrivacyLedger / RobustAggregation mixins. No protocol reads a threat key.
    """
    if threat.clean:
        return cls
    if threat.ldp.mechanism != "none":
        ldp_spec(threat.ldp)  # a bad spec or epsilon mix fails here, before any device runs
    mixins = [m for m, on in ((PrivacyLedger, threat.ldp.mechanism != "none"),
                              (RobustAggregation, threat.defence.kind != "none")) if on]
    device = cls.device_cls
    if threat.ldp.mechanism != "none" or threat.attack.kind != "none":
        device = threat_device_cls(cls.device_cls, threat)
    tags = "+".join(k for k in (threat.ldp.mechanism, threat.attack.kind, threat.defence.kind)
                    if k != "none")
    return type(f"{cls.__name__}[{tags}]", (*mixins, cls),
                {"device_cls": device, "threat": threat, "__module__": cls.__module__})


def resolve(flat: Mapping[str, Any]) -> tuple[RunConfig, type[DeviceStrategy]]:
    """Parsed config + strategy class (cached per process, keyed by the flat config)."""
    return _parsed(tuple(sorted(flat.items())))


def run_dir_for(cfg: RunConfig) -> Path:
    name = cfg.output.run_name or (
        f"{cfg.strategy.replace(':', '.')}-{Path(cfg.data.dataset).name}-"
        f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
    )
    return Path(cfg.output.output_dir).expanduser().resolve() / name


@functools.lru_cache(maxsize=4)
def device_profiles(n_devices: int, mix: str, seed: int) -> tuple:
    return tuple(assign_profiles(n_devices, parse_tier_mix(mix), seed))
