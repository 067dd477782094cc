"""``DeviceStrategy``: a Flower Strategy that reasons about devices, not Flower clients.

A protocol declares its round as phases (``Phase``: device phases and cloud-only steps, each
possibly every k rounds; default: ``fit`` then ``evaluate``) and overrides a few device-level
hooks (what the cloud holds, what each device is sent in a phase, how replies are combined).
``strategies.driver.run_round`` walks the phases, through Flower (``PhasedServer``) or in
this process (the plain loop). This base does the plumbing every protocol shares:

* seeded device sampling (a function of seed and round only);
* routing: devices are grouped in shards of ``devices-per-client`` consecutive ids, a shard
  goes to one Flower client, so one client = one device (faithful mode) or a cohort (fast
  mode) with identical numbers (``strategies.messages``);
* replies sorted by device id before aggregation (Ray's scheduling cannot change a sum);
* failures, dropouts and per-device costs counted: a Flower client that does not answer
  (its ClientApp raised, it timed out) has every device it was sent counted failed with the
  reason; a round in which no client answered, an evaluation that missed a device, or a
  model that diverged stops the run with one line (strategies.faults);
* one progress line per round; the run directory written incrementally (fedrec.results),
  with a checkpoint of the strategy after every round so a killed run can resume.

The legacy Flower hooks (``configure_fit`` ...) run the ``fit`` and ``evaluate`` phases, so
the strategy also works under Flower's default ``Server``; phases beyond those need
``PhasedServer``.
"""

from __future__ import annotations

import json
import time
from abc import abstractmethod
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.logger import log
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from clients.device import DeviceLogic
from fedrec.config import RunConfig
from fedrec.payload import pack
from fedrec.protocol import EVALUATE, FIT, Arrays, DeviceReply
from fedrec.reduce import ReduceSpec, Totals, combine_partials
from fedrec.results import RunRecorder
from fedrec.views import FederatedView
from strategies.driver import FlowerTransport, NDArrays, Results
from strategies.faults import (
    client_failures,
    raise_if_all_failed,
    raise_if_diverged,
    raise_if_eval_incomplete,
    raise_if_nobody_answered,
)
from strategies.messages import build_messages, decode_replies, read_reply, route
from strategies.rounds import RoundLog, progress_line, summarise_eval

INFO = 20
EMPTY = Parameters(tensors=[], tensor_type="numpy.ndarray")


@dataclass(frozen=True)
class Phase:
    """One step of a protocol's round.

    name: travels to the device as the task kind (``DeviceLogic`` dispatches on it);
    device: False for a cloud-only step (``cloud_step``), no message is sent;
    every: runs in rounds r with r % every == 0 (0: never, except ``last``);
    last: also runs in the last round; evaluates: replies are evaluation metrics (every
    asked device must answer); available_only: devices may be unavailable (dropouts,
    injected faults), as in training.
    """

    name: str
    device: bool = True
    every: int = 1
    last: bool = False
    evaluates: bool = False
    available_only: bool = False

    def runs_in(self, rnd: int, num_rounds: int) -> bool:
        return (self.last and rnd == num_rounds) or (self.every > 0 and rnd % self.every == 0)


def sample_devices(n_devices: int, fraction: float, seed: int, rnd: int) -> list[int]:
    """Seeded choice of max(1, round(fraction * n)) devices, sorted; depends on (seed, rnd) only."""
    k = max(1, round(fraction * n_devices))
    if k >= n_devices:
        return list(range(n_devices))
    rng = np.random.default_rng([seed, rnd, 7])
    return sorted(int(d) for d in rng.choice(n_devices, size=k, replace=False))


def _float_totals() -> defaultdict[str, float]:
    return defaultdict(float)


class DeviceStrategy(Strategy):
    """Base of every fedrec protocol. Subclasses set ``name``/``device_cls`` and the hooks."""

    #: attributes that are wiring, not run state: never checkpointed
    transient: ClassVar[frozenset[str]] = frozenset(
        {"cfg", "cloud", "recorder", "offset", "_sent", "_reduce", "_legacy", "run_id"})
    #: attributes a protocol rebuilds deterministically in ``__init__`` (e.g. a model
    #: pre-trained before round 1): left out of the checkpoint, rebuilt on resume
    rebuilt: ClassVar[frozenset[str]] = frozenset()

    name: ClassVar[str] = ""
    device_cls: ClassVar[type[DeviceLogic]]
    default_model: ClassVar[str] = "mf"
    #: on-device learning rate used when the run-config says ``lr = 0`` (the default); the
    #: one place a protocol's default step size is written
    default_lr: ClassVar[float] = 10.0
    #: the protocol's options section: a frozen dataclass read from the run-config keys
    #: ``<prefix><field>`` (defaults in pyproject.toml), parsed once into ``cfg.protocol``
    #: (experiments.setup) for both halves; None: the protocol has no options of its own
    options: ClassVar[type | None] = None
    prefix: ClassVar[str] = ""
    #: metric used for "best round" in the summary (device-averaged, validation split)
    select_metric: ClassVar[str] = "valid_ndcg@10"

    def __init__(self, *, cfg: RunConfig, fed: FederatedView, recorder: RunRecorder) -> None:
        super().__init__()
        self.cfg = cfg
        #: what the cloud may read of the data (``fed.cloud()``); the devices' own data is
        #: not kept here (tests/views/test_cloud_reads.py)
        self.cloud: Any = fed.cloud()
        self.recorder = recorder
        self.run_id = recorder.run_id
        self.n_devices: int = self.cloud.n_devices
        self.shard = cfg.sim.devices_per_client
        self.expected_clients = cfg.sim.flower_clients or -(-self.n_devices // self.shard)
        self.global_arrays: Arrays = self.init_global()
        self.totals: dict[int, dict[str, float]] = defaultdict(_float_totals)
        self.log = RoundLog(num_rounds=cfg.train.num_rounds)
        self.offset = 0                          # rounds finished before this process (resume)
        self._fit_ids: list[int] = []            # devices selected for this round's fit phase
        self._sent: dict[str, list[int]] = {}
        self._reduce: ReduceSpec | None = None   # what this round's fit cohorts were asked to sum
        self._legacy: FlowerTransport | None = None

    # ------------------------------------------------------------------ protocol hooks
    @classmethod
    def prepare_data(cls, cfg: RunConfig) -> Any:
        """The federated dataset (cached per process). Default: leave-one-out split."""
        from fedrec.federated import prepare_loo

        return prepare_loo(cfg.data)

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        """Raise ConfigError when this protocol cannot run ``cfg``. Cheap: trains nothing and
        writes nothing (experiments.setup calls it before any data is read). Default: no check."""

    def phases(self) -> tuple[Phase, ...]:
        """The round's steps, in order. Default: train, then evaluate every ``eval-every``
        rounds and after the last."""
        return (Phase(FIT, available_only=True),
                Phase(EVALUATE, every=self.cfg.sim.eval_every, last=True, evaluates=True))

    @abstractmethod
    def init_global(self) -> Arrays:
        """The cloud's model before round 1 (seeded)."""

    @abstractmethod
    def aggregate(self, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        """Update ``self.global_arrays`` from the ok fit replies (sorted by device id)."""

    def fit_broadcast(self, rnd: int) -> Arrays:
        return self.global_arrays

    def fit_own(self, rnd: int, device_ids: list[int]) -> dict[int, Arrays]:
        return {}

    def eval_broadcast(self, rnd: int) -> Arrays:
        return self.global_arrays

    def eval_own(self, rnd: int, device_ids: list[int]) -> dict[int, Arrays]:
        """Arrays addressed to single devices in an evaluation message (default none)."""
        return {}

    def phase_broadcast(self, phase: Phase, rnd: int) -> Arrays:
        """What every device of ``phase`` downloads (default: the fit/eval broadcasts)."""
        return {FIT: self.fit_broadcast, EVALUATE: self.eval_broadcast}.get(
            phase.name, lambda r: {})(rnd)

    def phase_own(self, phase: Phase, rnd: int, device_ids: list[int]) -> dict[int, Arrays]:
        """Arrays addressed to single devices in ``phase``."""
        if phase.name == FIT:
            return self.fit_own(rnd, device_ids)
        return self.eval_own(rnd, device_ids) if phase.name == EVALUATE else {}

    def on_phase(self, phase: Phase, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        """Combine the ok replies of a device phase other than fit/evaluate."""
        raise NotImplementedError(f"{type(self).__name__} declares phase {phase.name!r} "
                                  "but no on_phase")

    def on_evaluated(self, rnd: int, replies: list[DeviceReply]) -> None:
        """See an evaluating phase's replies (sorted by device id) before they are averaged,
        e.g. to keep per-device metrics; default nothing."""

    def cloud_step(self, phase: Phase, rnd: int) -> dict[str, float]:
        """Run a cloud-only phase (e.g. distillation, nightly matching); returns metrics."""
        raise NotImplementedError(f"{type(self).__name__} declares cloud step {phase.name!r} "
                                  "but no cloud_step")

    def round_config(self, rnd: int, kind: str) -> dict[str, Any]:
        return {}

    def reduce_spec(self) -> ReduceSpec | None:
        """What a cohort may sum instead of sending every device's upload
        (fedrec.reduce.reduce_uploads); None = the strategy needs every upload."""
        return None

    def aggregate_totals(self, rnd: int, totals: Totals) -> dict[str, float]:
        """``aggregate`` from the cohorts' sums; needed only where ``reduce_spec`` is not None."""
        raise NotImplementedError(f"{type(self).__name__} has a reduce_spec but no aggregate_totals")

    def select_fit_devices(self, rnd: int) -> list[int]:
        return sample_devices(self.n_devices, self.cfg.train.fraction_fit, self.cfg.train.seed, rnd)

    def select_eval_devices(self, rnd: int) -> list[int]:
        return sample_devices(self.n_devices, self.cfg.sim.eval_fraction, self.cfg.data.seed, 0)

    def select(self, phase: Phase, rnd: int) -> list[int]:
        """Devices of ``phase``: sampled for fit, the evaluation set for evaluating phases,
        this round's fit devices otherwise."""
        if phase.name == FIT:
            return self.select_fit_devices(rnd)
        return self.select_eval_devices(rnd) if phase.evaluates else list(self._fit_ids)

    # ------------------------------------------------------------------ the round (driver API)
    def round_phases(self, rnd: int) -> list[Phase]:
        return [p for p in self.phases() if p.runs_in(rnd, self.cfg.train.num_rounds)]

    def phase_index(self, phase: Phase) -> int:
        return [p.name for p in self.phases()].index(phase.name)

    def begin_round(self, rnd: int) -> None:
        self._fit_ids = []
        self.log.begin(rnd, selected=0)

    def phase_messages(self, phase: Phase, rnd: int, slots: list[str]) -> list[tuple[str, NDArrays]]:
        ids = self.select(phase, rnd)
        reduce = None
        if phase.name == FIT:
            self._fit_ids = ids
            self.log.selected(len(ids))
            reduce = self.reduce_spec() if self.shard > 1 and self.cfg.sim.host_reduce else None
            self._reduce = reduce
        header = {"round": rnd, "kind": phase.name, "phase_index": self.phase_index(phase),
                  "available_only": phase.available_only, "shard_size": self.shard,
                  "run": self.run_id, "config": self.round_config(rnd, phase.name)}
        if reduce is not None:
            header["reduce"] = reduce
        messages, self._sent = build_messages(header, ids, self.phase_broadcast(phase, rnd),
                                              self.phase_own(phase, rnd, ids), self.shard, slots,
                                              self.n_devices)
        return messages

    def phase_results(self, phase: Phase, rnd: int, results: Results, failures: list) -> dict[str, float]:
        """Count, check and combine a device phase's replies; returns the phase's metrics."""
        answered = {cid for cid, _ in results}
        raise_if_nobody_answered(rnd, len(self._sent), len(answered), failures)
        missing = {cid: devs for cid, devs in self._sent.items() if cid not in answered}
        replies = client_failures(rnd, missing, failures)
        parts: list[tuple[int, Arrays]] = []   # (first device id, a cohort's sums)
        for _, nd in results:
            decoded, part = read_reply(nd)
            replies += decoded
            if part is not None:
                parts.append(part)
        replies.sort(key=lambda r: r.device_id)
        if phase.name == FIT:
            return self._fit_results(rnd, replies, parts)
        if phase.evaluates:
            raise_if_eval_incomplete(rnd, sum(map(len, self._sent.values())), replies)
            self.on_evaluated(rnd, replies)
            metrics = summarise_eval(replies)
            self.log.eval_done(metrics)
            return metrics
        self._account(replies, prefix=f"{phase.name}_")
        raise_if_all_failed(rnd, replies)
        metrics = self.on_phase(phase, rnd, [r for r in replies if r.status == "ok"])
        self.log.phase_done(phase.name, replies, metrics)
        return metrics

    def _fit_results(self, rnd: int, replies: list[DeviceReply],
                     parts: list[tuple[int, Arrays]]) -> dict[str, float]:
        self._account(replies)
        raise_if_all_failed(rnd, replies)
        ok = [r for r in replies if r.status == "ok"]
        if not ok:
            metrics = {}
        elif self._reduce is not None:
            parts.sort(key=lambda p: p[0])
            metrics = self.aggregate_totals(rnd, combine_partials([p for _, p in parts], self._reduce))
        else:
            metrics = self.aggregate(rnd, ok)
        raise_if_diverged(rnd, self.global_arrays, ok)
        self.log.fit_done(replies, metrics)
        return metrics

    def cloud_phase(self, phase: Phase, rnd: int) -> None:
        t0 = time.monotonic()
        metrics = self.cloud_step(phase, rnd)
        raise_if_diverged(rnd, self.global_arrays, [])
        self.log.update({f"{phase.name}_{k}": v for k, v in metrics.items()})
        self.log.update({f"{phase.name}_wall_s": time.monotonic() - t0})

    def end_round(self, rnd: int) -> None:
        record = self.log.end(rnd)
        self.recorder.log_round(record)
        self.recorder.save_checkpoint(rnd, self.state_dict())
        if not self.cfg.output.quiet:
            log(INFO, "%s", progress_line(record, self.cfg.train.num_rounds))
        if rnd == self.cfg.train.num_rounds:
            self.finish()

    def end_messages(self, slots: list[str]) -> list[tuple[str, NDArrays]]:
        """The run is over: each client deletes its devices' private state for this run
        (unless ``keep-device-state``); the cloud names the run, never a folder."""
        header = {"kind": "end", "run": self.run_id, "devices": [], "round": 0,
                  "keep": self.cfg.sim.keep_device_state, "shard_size": self.shard}
        return [(cid, pack({}, header)) for cid in slots]

    # ------------------------------------------------------------------ Flower's legacy hooks
    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return EMPTY  # the global model lives in the strategy; nothing is asked of a client

    def _legacy_slots(self, client_manager: ClientManager) -> tuple[list[str], dict[str, ClientProxy]]:
        if self._legacy is None or self._legacy.client_manager is not client_manager:
            self._legacy = FlowerTransport(client_manager, self.expected_clients, None)
        slots = self._legacy.slots()
        return slots, dict(client_manager.all())

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        rnd = server_round + self.offset
        self.begin_round(rnd)
        slots, proxies = self._legacy_slots(client_manager)
        msgs = self.phase_messages(self.phases()[0], rnd, slots)
        return [(proxies[cid], FitIns(ndarrays_to_parameters(nd), {})) for cid, nd in msgs]

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list) -> tuple[Parameters | None, dict[str, Any]]:
        rnd = server_round + self.offset
        got = [(proxy.cid, parameters_to_ndarrays(res.parameters)) for proxy, res in results]
        return EMPTY, self.phase_results(self.phases()[0], rnd, got, failures)

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager) -> list[tuple[ClientProxy, EvaluateIns]]:
        rnd = server_round + self.offset
        evaluating = [p for p in self.round_phases(rnd) if p.evaluates]
        if not evaluating:
            self.end_round(rnd)
            return []
        slots, proxies = self._legacy_slots(client_manager)
        msgs = self.phase_messages(evaluating[0], rnd, slots)
        return [(proxies[cid], EvaluateIns(ndarrays_to_parameters(nd), {})) for cid, nd in msgs]

    def aggregate_evaluate(self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]],
                           failures: list) -> tuple[float | None, dict[str, Any]]:
        rnd = server_round + self.offset
        got = [(proxy.cid, pack({}, {"devices": json.loads(str(res.metrics["devices"]))}))
               for proxy, res in results]
        phase = next(p for p in self.round_phases(rnd) if p.evaluates)
        metrics = self.phase_results(phase, rnd, got, failures)
        self.end_round(rnd)
        return None, metrics

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict] | None:
        return None  # no centralised evaluation: user state lives on the devices

    # ------------------------------------------------------------------ bookkeeping
    def _account(self, replies: list[DeviceReply], prefix: str = "") -> None:
        for r in replies:
            t = self.totals[r.device_id]
            t[f"{prefix}rounds_{r.status}"] += 1
            for k, v in r.costs.items():
                t[prefix + k] += v

    def finish(self) -> None:
        """Write devices.csv, the final model and the final summary."""
        rows = [{"device_id": d, **dict(t)} for d, t in sorted(self.totals.items())]
        self.recorder.write_devices(rows)
        self.recorder.write_model(self.global_arrays)
        summary = self.log.summary(self.select_metric)
        # which model the metrics score: "global", "personalised" or "stale" (fedrec.evaluation)
        summary["scored_model"] = getattr(self.device_cls, "scored_model", None)
        self.recorder.write_summary(summary)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything the cloud knows after a round (model, ledgers, defence and protocol
        state, the round log), without wiring and rebuilt parts: what resume restores."""
        skip = self.transient | self.rebuilt
        return {k: v for k, v in vars(self).items() if k not in skip}

    def load_state(self, rnd: int, state: dict[str, Any]) -> None:
        """Continue after round ``rnd`` from a ``state_dict``; wall time carries over."""
        vars(self).update(state)
        self.offset = rnd
        self.log.t0 = time.monotonic() - (self.log.records[-1]["elapsed_s"] if self.log.records else 0.0)


__all__ = ["EMPTY", "DeviceStrategy", "Phase", "decode_replies", "route", "sample_devices"]
