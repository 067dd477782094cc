"""Threat-model run-config: switch keys, prefixed options, validation, pyproject defaults."""

from __future__ import annotations

import pytest

from experiments.setup import effective_config, pyproject_defaults, resolve, with_threats
from fedrec.errors import ConfigError
from fedrec.threat_config import (
    ThreatConfig,
    parse_threat_config,
)
from strategies.fedmf import FedMF, FedMFDevice


def test_defaults_are_clean_and_match_pyproject() -> None:
    t = parse_threat_config(pyproject_defaults())
    assert t == ThreatConfig() and t.clean


def test_switch_keys_and_prefixed_options_are_parsed() -> None:
    t = parse_threat_config({"ldp": "gaussian", "ldp-bound": "0.5", "ldp-epsilon-mix": "1:0.5,inf:0.5",
                             "attack": "pipattack", "attack-fraction": 0.05, "attack-targets": 3,
                             "defence": "multi-krum", "defence-krum-fraction": 0.1})
    assert (t.ldp.mechanism, t.ldp.bound, t.ldp.epsilon_mix) == ("gaussian", 0.5, "1:0.5,inf:0.5")
    assert (t.attack.kind, t.attack.fraction, t.attack.targets) == ("pipattack", 0.05, 3)
    assert (t.defence.kind, t.defence.krum_fraction) == ("multi-krum", 0.1)
    assert t.attack.targeted and not t.clean


@pytest.mark.parametrize("flat,fragment", [
    ({"attack": "ddos"}, "attack = 'ddos'"),
    ({"defence": "prayer"}, "defence = 'prayer'"),
    ({"ldp": "rappor"}, "ldp = 'rappor'"),
    ({"attack-fraction": 1.0}, "attack-fraction"),
    ({"defence-beta": 0.5}, "defence-beta"),
    ({"attack-targets": "two"}, "attack-targets"),
])
def test_bad_values_are_one_line_config_errors(flat: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_threat_config(flat)


def test_composition_is_identity_when_clean_and_wraps_otherwise() -> None:
    assert with_threats(FedMF, ThreatConfig()) is FedMF
    t = parse_threat_config({"ldp": "laplace", "attack": "noise", "defence": "median"})
    cls = with_threats(FedMF, t)
    assert issubclass(cls, FedMF) and cls.threat == t
    assert [c.__name__ for c in cls.__mro__[1:3]] == ["PrivacyLedger", "RobustAggregation"]
    assert cls.device_cls is not FedMFDevice
    assert cls.device_cls.sparse_tables == FedMFDevice.sparse_tables
    only_defence = with_threats(FedMF, parse_threat_config({"defence": "krum"}))
    assert only_defence.device_cls is FedMFDevice  # devices are untouched by a cloud defence


def test_bad_epsilon_mix_fails_at_resolve_time() -> None:
    with pytest.raises(ConfigError, match="epsilon mix"):
        resolve(effective_config({}, {"ldp": "laplace", "ldp-epsilon-mix": "1:0.5"}))
