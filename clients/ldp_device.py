"""``LdpDevice``: local differential privacy as a wrapper around any protocol's device logic.

After the wrapped logic's local training (its vectorised cohort path included), every
upload is clipped and noised on the device (``fedrec.ldp.privatize_upload``) before it
leaves: floating arrays get noise, SparseRows indices travel unchanged (see fedrec/ldp.py
for what that does and does not protect). Each device's budget per round comes from the
configured epsilon mix (privacy heterogeneity, a function of seed and device id) and the
reply reports what was spent (``ldp_*`` metrics), which the cloud's accountant composes
(strategies.privacy).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from clients.device import DeviceLogic
from fedrec.ldp import EpsilonMix, LdpSpec, device_epsilon, privatize_upload, report_metrics
from fedrec.protocol import FIT, DeviceReply, DeviceTask

_NOISE_STREAM = 0x4C4E53  # "LNS": the noise draws, apart from the device's training RNG


def noise_rng(seed: int, rnd: int, device_id: int) -> np.random.Generator:
    """The LDP noise RNG of a device in a round: a function of (seed, round, device)."""
    return np.random.default_rng([seed, rnd, device_id, _NOISE_STREAM])


class LdpDevice(DeviceLogic):
    """Privatizes every fit upload of ``inner``.

    Parameters
    ----------
    inner : the protocol's device logic (any upload format).
    spec : mechanism, clipping and delta; its epsilon is replaced per device from ``mix``.
    mix : (epsilon, share) groups; device d gets ``device_epsilon(mix, seed, d)``.
    seed : the run seed (budgets and noise streams).
    """

    def __init__(self, inner: DeviceLogic, spec: LdpSpec, mix: EpsilonMix, seed: int) -> None:
        super().__init__(inner.cfg, inner.fed)
        self.inner = inner
        self.spec = spec
        self.mix = mix
        self.seed = seed

    def spec_for(self, device_id: int) -> LdpSpec:
        return dataclasses.replace(self.spec, epsilon=device_epsilon(self.mix, self.seed, device_id))

    def fit(self, task: DeviceTask) -> DeviceReply:
        return self.run_many([task])[0]

    def evaluate(self, task: DeviceTask) -> DeviceReply:
        return self.run_many([task])[0]

    def run_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        replies = self.inner.run_many(tasks)
        for t, r in zip(tasks, replies, strict=True):
            if t.kind == FIT and r.status == "ok":
                rng = noise_rng(self.seed, t.rnd, t.device_id)
                r.upload, rep = privatize_upload(r.upload, self.spec_for(t.device_id), rng)
                r.metrics = {**r.metrics, **report_metrics(rep)}
        return replies
