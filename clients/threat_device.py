"""The device logic of a run with LDP and/or attackers, composed from the protocol's own.

``threat_device_cls(FedMFDevice, threat)`` returns a class with the protocol device's
constructor signature ``(cfg, fed)`` and class attributes (``sparse_tables``,
``model_name``, ``scored_model``), so hosts, the plain loop and the strategy use it unchanged. It builds:

    protocol logic (on PoisonedData when attackers train on fake profiles)
      -> LdpDevice     (ldp != "none": every upload privatized)
      -> AttackDevice  (attack != "none": malicious uploads rewritten, exposure metrics)
"""

from __future__ import annotations

from typing import Any, ClassVar

from clients.attacks.device import AttackDevice
from clients.attacks.kinds import make_attack
from clients.attacks.population import PoisonedData
from clients.device import DeviceLogic
from clients.ldp_device import LdpDevice
from fedrec.ldp import EpsilonMix, LdpSpec, parse_epsilon_mix
from fedrec.protocol import DeviceReply, DeviceTask
from fedrec.threat_config import LdpConfig, ThreatConfig


def ldp_spec(lcfg: LdpConfig) -> tuple[LdpSpec, EpsilonMix]:
    """The validated LdpSpec (epsilon filled per device later) and the epsilon mix."""
    spec = LdpSpec(mechanism=lcfg.mechanism, clip=lcfg.clip, bound=lcfg.bound,
                   delta=lcfg.delta, gaussian_method=lcfg.gaussian_method)
    return spec, parse_epsilon_mix(lcfg.epsilon_mix)


def build_chain(inner_cls: type[DeviceLogic], threat: ThreatConfig, cfg: Any,
                fed: Any) -> tuple[DeviceLogic, DeviceLogic]:
    """(outermost logic, bare protocol logic) for this threat configuration."""
    attack = make_attack(threat.attack, cfg.train.seed, fed) if threat.attack.kind != "none" else None
    data = PoisonedData(fed, attack.fake_profiles(fed)) if attack else fed
    base = inner_cls(cfg, data)
    logic: DeviceLogic = base
    if threat.ldp.mechanism != "none":
        logic = LdpDevice(logic, *ldp_spec(threat.ldp), seed=cfg.train.seed)
    if attack is not None:
        logic = AttackDevice(logic, base, attack)
    return logic, base


class ThreatDevice(DeviceLogic):
    """Delegates to the composed chain; subclasses bind ``inner_cls`` and ``threat``."""

    inner_cls: ClassVar[type[DeviceLogic]]
    threat: ClassVar[ThreatConfig]

    def __init__(self, cfg: Any, fed: Any) -> None:
        super().__init__(cfg, fed)
        self.chain, self.base = build_chain(self.inner_cls, self.threat, cfg, fed)

    def fit(self, task: DeviceTask) -> DeviceReply:
        return self.chain.run_many([task])[0]

    def evaluate(self, task: DeviceTask) -> DeviceReply:
        return self.chain.run_many([task])[0]

    def run_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        return self.chain.run_many(tasks)


def threat_device_cls(inner_cls: type[DeviceLogic], threat: ThreatConfig) -> type[DeviceLogic]:
    """A ThreatDevice subclass bound to the protocol's device class and the threat config."""
    attrs = {name: getattr(inner_cls, name) for name in ("sparse_tables", "model_name", "scored_model")
             if hasattr(inner_cls, name)}
    return type(f"Threat{inner_cls.__name__}", (ThreatDevice,),
                {**attrs, "inner_cls": inner_cls, "threat": threat, "__module__": __name__})
