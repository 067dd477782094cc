"""``AttackDevice``: the device logic of a run where some devices are malicious.

It wraps the protocol's logic. Benign devices run it unchanged; malicious devices run it
too (on their fake profiles, see ``PoisonedData``) and the attack then rewrites their
uploads, so a cohort still trains in one vectorised call. In evaluation, benign devices
also report the exposure of the target items (er@5, er@10) and malicious devices report
nothing, so every evaluation mean is over benign users only.

Exposure (ER@5, ER@10): each benign device scores every item with the protocol's own model
(``DeviceLogic.score_many``, the model its ``scored_model`` names), masks its training items
and reports the share of the target items (among those it never trained on) inside its
top-K (``fedrec.evaluation.exposure_at_k``; ties count against the target). The cloud's
device average equals the papers' ER@K (mean over targets of the share of users exposed,
``fedrec.metrics.exposure_ratio_at_k``) whenever every user is eligible for every target,
the usual case for unpopular targets.
"""

from __future__ import annotations

import numpy as np

from clients.attacks.kinds import Attack
from clients.device import DeviceLogic
from fedrec.evaluation import exposure_at_k
from fedrec.protocol import FIT, DeviceReply, DeviceTask


class AttackDevice(DeviceLogic):
    """inner: the logic devices run (maybe LDP-wrapped); scorer: the bare protocol logic,
    whose ``score_many`` ranks all items for the exposure metric."""

    def __init__(self, inner: DeviceLogic, scorer: DeviceLogic, attack: Attack) -> None:
        super().__init__(inner.cfg, inner.fed)
        self.inner = inner
        self.scorer = scorer
        self.attack = attack

    def fit(self, task: DeviceTask) -> DeviceReply:
        return self.run_many([task])[0]

    def evaluate(self, task: DeviceTask) -> DeviceReply:
        return self.run_many([task])[0]

    def run_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        fit = [i for i, t in enumerate(tasks) if t.kind == FIT]
        ev = [i for i, t in enumerate(tasks) if t.kind != FIT]
        out: dict[int, DeviceReply] = {}
        out.update(zip(fit, self.fit_many([tasks[i] for i in fit]), strict=True))
        out.update(zip(ev, self.evaluate_many([tasks[i] for i in ev]), strict=True))
        return [out[i] for i in range(len(tasks))]

    def fit_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        if not tasks:
            return []
        replies = self.inner.run_many(tasks)
        for t, r in zip(tasks, replies, strict=True):
            if r.status == "ok" and t.device_id in self.attack.malicious:
                r.upload = self.attack.craft(r.upload, t)
        return replies

    def evaluate_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        benign = [t for t in tasks if t.device_id not in self.attack.malicious]
        replies = {r.device_id: r for r in (self.inner.run_many(benign) if benign else [])}
        if benign and self.attack.cfg.targeted:
            trained = [self.scorer.fed.device(t.device_id).train_items for t in benign]
            er = exposure_at_k(self.scorer.score_many(benign), self.attack.targets, trained, (5, 10))
            for u, t in enumerate(benign):  # a device eligible for no target reports no er@k
                replies[t.device_id].metrics.update(
                    {name.lower(): float(v[u]) for name, v in er.items() if not np.isnan(v[u])})
        return [replies.get(t.device_id, DeviceReply(device_id=t.device_id)) for t in tasks]
