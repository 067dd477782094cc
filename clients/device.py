"""What one simulated device receives, computes and returns, independent of Flower.

A protocol's on-device logic subclasses ``DeviceLogic`` and implements ``fit`` and, to be
evaluated, ``score`` (or its own ``evaluate``) for ONE device. ``DeviceHost``
(clients/host.py) runs it for every device a Flower client simulates, so the same code
serves one-device-per-client and cohort mode. What a device receives and returns
(``DeviceTask``, ``DeviceReply``, phase kinds, ``device_rng``) is ``fedrec.protocol``, the
contract both halves share; this module re-exports it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from fedrec.config import RunConfig
from fedrec.evaluation import SCORED_MODELS, leave_one_out_metrics
from fedrec.protocol import END, EVALUATE, FIT, Arrays, DeviceReply, DeviceTask, device_rng

#: the contract lives in fedrec.protocol (both halves use it); re-exported for plug-ins
__all__ = ["END", "EVALUATE", "FIT", "Arrays", "DeviceLogic", "DeviceReply", "DeviceTask",
           "device_rng"]


class DeviceLogic(ABC):
    """The on-device half of a protocol. One instance serves many devices of one run.

    Subclasses get the parsed run config and the federated dataset (``fed``), which hands
    each device only its own rows (``fed.device(device_id)``).

    Evaluation contract: a protocol that ranks items implements ``score`` (and, where it pays
    off, a vectorised ``score_many``) with the model named by ``scored_model``; the default
    ``evaluate`` then runs the leave-one-out protocol of ``fedrec.evaluation`` on it. Protocols
    on other data (C3DRec's timelines) override ``evaluate``.
    """

    #: the model ``score`` ranks with, one of ``fedrec.evaluation.SCORED_MODELS``
    #: ("global", "personalised", "stale"); None: the protocol scores no items
    scored_model: ClassVar[str | None] = None
    #: cut-offs of the default evaluation (HR/NDCG/MRR@k)
    eval_ks: ClassVar[tuple[int, ...]] = (10, 20)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.scored_model is not None and cls.scored_model not in SCORED_MODELS:
            raise TypeError(f"{cls.__name__}.scored_model = {cls.scored_model!r}: use one of "
                            f"{', '.join(SCORED_MODELS)} (or None if it scores no items)")

    def __init__(self, cfg: RunConfig, fed: Any) -> None:
        self.cfg = cfg
        self.fed = fed

    @abstractmethod
    def fit(self, task: DeviceTask) -> DeviceReply:
        """Local training on the device's own data."""

    def score(self, task: DeviceTask, items: np.ndarray | None = None) -> np.ndarray:
        """This device's scores of ``items`` with the model ``scored_model`` names.

        items: int [C], or [S, C] (S candidate lists scored as S requests after one model
        load), or None for every item. Returns float of the items' shape ([n_items] for None);
        higher is better.
        """
        raise NotImplementedError(f"{type(self).__name__} does not score items")

    def score_many(self, tasks: list[DeviceTask], items: np.ndarray | None = None) -> np.ndarray:
        """``score`` for a cohort, one candidate list per device: items int [T, C] (row t for
        ``tasks[t]``) -> float [T, C]; None -> float [T, n_items]. Override with a vectorised
        version where it pays off; it must give the per-device scores up to float rounding."""
        return np.stack([self.score(t, None if items is None else items[i])
                         for i, t in enumerate(tasks)])

    def evaluate(self, task: DeviceTask) -> DeviceReply:
        """Leave-one-out evaluation of this device with ``score`` (one model load); the
        reference every vectorised path is tested against. Nothing to report without a
        ``scored_model``."""
        def scores(items: np.ndarray | None) -> np.ndarray:
            return self.score(task, None if items is None else items[0])[None]

        return self.evaluated([task], scores)[0]

    def evaluate_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        """Leave-one-out evaluation of a cohort with ``score_many``: one call per candidate
        list (validation, test), or one over all items for the full-ranking protocol."""
        def scores(items: np.ndarray | None) -> np.ndarray:
            if items is None:
                return self.score_many(tasks)
            return np.stack([self.score_many(tasks, items[:, j]) for j in range(items.shape[1])],
                            axis=1)

        return self.evaluated(tasks, scores)

    def evaluated(self, tasks: list[DeviceTask],
                  scores: Callable[[np.ndarray | None], np.ndarray]) -> list[DeviceReply]:
        """Replies with ``fedrec.evaluation.leave_one_out_metrics`` of the tasks' devices."""
        if self.scored_model is None:
            return [DeviceReply(device_id=t.device_id, state=t.state) for t in tasks]
        data = [self.fed.device(t.device_id) for t in tasks]
        found = leave_one_out_metrics(data, scores, self.eval_ks)
        return [DeviceReply(device_id=t.device_id, metrics=m) for t, m in zip(tasks, found, strict=True)]

    def handlers(self) -> dict[str, Callable[[DeviceTask], DeviceReply]]:
        """Phase name -> this device's half of that phase (a protocol with more phases than
        fit and evaluate adds its own: strategies.base.Phase)."""
        return {FIT: self.fit, EVALUATE: self.evaluate}

    def run_task(self, task: DeviceTask) -> DeviceReply:
        """The one dispatch: the task's phase picks the handler."""
        handler = self.handlers().get(task.kind)
        if handler is None:
            raise ValueError(f"{type(self).__name__} has no device half for phase {task.kind!r}")
        return handler(task)

    def run_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        """Run a cohort's tasks. Override with a vectorised version where it pays off;
        it must give the same replies as the per-device loop."""
        return [self.run_task(t) for t in tasks]
