"""``DeviceStrategy``: a Flower Strategy that reasons about devices, not Flower clients.

A protocol overrides a few device-level hooks (what the cloud holds, what each device is
sent, how device uploads are combined); this base maps device tasks onto Flower clients and
device replies back, and does the plumbing every protocol shares:

* seeded device sampling (a function of seed and round only);
* routing: devices are grouped in shards of ``devices-per-client`` consecutive ids, a shard
  goes to one Flower client, so one client = one device (faithful mode) or a cohort (fast
  mode) with identical numbers;
* replies sorted by device id before aggregation (Ray's scheduling cannot change a sum);
* failures, dropouts and per-device costs counted: a Flower client that does not answer
  (its ClientApp raised, it timed out) has every device it was sent counted failed with the
  reason; a round in which no client answered, an evaluation that missed a device, or a
  model that diverged stops the run with one line (strategies.faults);
* one progress line per round; the run directory written incrementally (fedrec.results),
  with a checkpoint of the strategy after every round so a killed run can resume.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections import defaultdict
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

from clients.device import EVALUATE, FIT, Arrays, DeviceLogic, DeviceReply
from fedrec.config import RunConfig
from fedrec.payload import BROADCAST, REDUCED, pack, scoped, split_scopes, unpack
from fedrec.results import RunRecorder
from strategies.aggregation import ReduceSpec, Totals, combine_partials
from strategies.faults import (
    client_failures,
    raise_if_all_failed,
    raise_if_diverged,
    raise_if_eval_incomplete,
    raise_if_nobody_answered,
)
from strategies.rounds import RoundLog, progress_line, summarise_eval

INFO = 20
EMPTY = Parameters(tensors=[], tensor_type="numpy.ndarray")


def sample_devices(n_devices: int, fraction: float, seed: int, rnd: int) -> list[int]:
    """Seeded choice of max(1, round(fraction * n)) devices, sorted; depends on (seed, rnd) only."""
    k = max(1, int(round(fraction * n_devices)))
    if k >= n_devices:
        return list(range(n_devices))
    rng = np.random.default_rng([seed, rnd, 7])
    return sorted(int(d) for d in rng.choice(n_devices, size=k, replace=False))


def route(device_ids: list[int], shard_size: int, n_clients: int) -> dict[int, list[int]]:
    """Client slot -> its devices. A shard (``d // shard_size``) never spans two slots."""
    slots: dict[int, list[int]] = defaultdict(list)
    for d in device_ids:
        slots[(d // shard_size) % n_clients].append(d)
    return dict(slots)


def _float_totals() -> defaultdict[str, float]:
    return defaultdict(float)


class DeviceStrategy(Strategy):
    """Base of every fedrec protocol. Subclasses set ``name``/``device_cls`` and the hooks."""

    #: attributes that are wiring, not run state: never checkpointed
    transient: ClassVar[frozenset[str]] = frozenset(
        {"cfg", "fed", "recorder", "offset", "_sent", "_reduce", "_waited"})
    #: attributes a protocol rebuilds deterministically in ``__init__`` (e.g. a model
    #: pre-trained before round 1): left out of the checkpoint, rebuilt on resume
    rebuilt: ClassVar[frozenset[str]] = frozenset()

    name: ClassVar[str] = ""
    device_cls: ClassVar[type[DeviceLogic]]
    default_model: ClassVar[str] = "mf"
    #: on-device learning rate used when the run-config says ``lr = 0`` (the default)
    default_lr: ClassVar[float] = 10.0
    #: metric used for "best round" in the summary (device-averaged, validation split)
    select_metric: ClassVar[str] = "valid_ndcg@10"

    def __init__(self, *, cfg: RunConfig, fed: Any, recorder: RunRecorder) -> None:
        super().__init__()
        self.cfg = cfg
        self.fed = fed
        self.recorder = recorder
        self.n_devices: int = fed.n_devices
        self.shard = cfg.sim.devices_per_client
        self.expected_clients = -(-self.n_devices // self.shard)
        self.global_arrays: Arrays = self.init_global()
        self.totals: dict[int, dict[str, float]] = defaultdict(_float_totals)
        self.log = RoundLog(num_rounds=cfg.train.num_rounds)
        self.offset = 0                          # rounds finished before this process (resume)
        self._sent: dict[str, list[int]] = {}
        self._reduce: ReduceSpec | None = None   # what this round's fit cohorts were asked to sum
        self._waited = False

    # ------------------------------------------------------------------ device-level hooks
    @classmethod
    def prepare_data(cls, cfg: RunConfig) -> Any:
        """The federated dataset (cached per process). Default: leave-one-out split."""
        from fedrec.federated import prepare_loo

        return prepare_loo(cfg.data)

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        """Raise ConfigError when this protocol cannot run ``cfg``. Cheap: trains nothing and
        writes nothing (experiments.setup calls it before any data is read). Default: no check."""

    @abstractmethod
    def init_global(self) -> Arrays:
        """The cloud's model before round 1 (seeded)."""

    @abstractmethod
    def aggregate(self, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        """Update ``self.global_arrays`` from the ok replies (sorted by device id)."""

    def fit_broadcast(self, rnd: int) -> Arrays:
        return self.global_arrays

    def fit_own(self, rnd: int, device_ids: list[int]) -> dict[int, Arrays]:
        return {}

    def eval_broadcast(self, rnd: int) -> Arrays:
        return self.global_arrays

    def eval_own(self, rnd: int, device_ids: list[int]) -> dict[int, Arrays]:
        """Arrays addressed to single devices in an evaluation message (default none)."""
        return {}

    def round_config(self, rnd: int, kind: str) -> dict[str, Any]:
        return {}

    def reduce_spec(self) -> ReduceSpec | None:
        """What a cohort may sum instead of sending every device's upload
        (strategies.aggregation.reduce_uploads); None = the strategy needs every upload."""
        return None

    def aggregate_totals(self, rnd: int, totals: Totals) -> dict[str, float]:
        """``aggregate`` from the cohorts' sums; needed only where ``reduce_spec`` is not None."""
        raise NotImplementedError(f"{type(self).__name__} has a reduce_spec but no aggregate_totals")

    def select_fit_devices(self, rnd: int) -> list[int]:
        return sample_devices(self.n_devices, self.cfg.train.fraction_fit, self.cfg.train.seed, rnd)

    def select_eval_devices(self, rnd: int) -> list[int]:
        return sample_devices(self.n_devices, self.cfg.sim.eval_fraction, self.cfg.data.seed, 0)

    # ------------------------------------------------------------------ Flower hooks
    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return EMPTY  # the global model lives in the strategy; nothing is asked of a client

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        server_round += self.offset
        ids = self.select_fit_devices(server_round)
        self.log.begin(server_round, selected=len(ids))
        own = self.fit_own(server_round, ids)
        msgs = self._messages(server_round, ids, FIT, self.fit_broadcast(server_round), own, client_manager)
        return [(proxy, FitIns(params, {})) for proxy, params in msgs]

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list) -> tuple[Parameters | None, dict[str, Any]]:
        server_round += self.offset
        replies = self._lost(server_round, results, failures)
        parts: list[tuple[int, Arrays]] = []   # (first device id, a cohort's sums)
        for proxy, res in results:
            arrays, meta = unpack(parameters_to_ndarrays(res.parameters))
            scopes = split_scopes(arrays)
            if REDUCED in scopes:
                parts.append((min(int(d) for d in meta["devices"]), scopes.pop(REDUCED)))
            replies += decode_replies(scopes, meta["devices"])
        replies.sort(key=lambda r: r.device_id)
        self._account(replies)
        raise_if_all_failed(server_round, replies)
        ok = [r for r in replies if r.status == "ok"]
        if not ok:
            metrics = {}
        elif self._reduce is not None:
            parts.sort(key=lambda p: p[0])
            metrics = self.aggregate_totals(server_round, combine_partials([p for _, p in parts],
                                                                           self._reduce))
        else:
            metrics = self.aggregate(server_round, ok)
        raise_if_diverged(server_round, self.global_arrays, ok)
        self.log.fit_done(replies, metrics)
        return EMPTY, metrics

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager) -> list[tuple[ClientProxy, EvaluateIns]]:
        server_round += self.offset
        every, last = self.cfg.sim.eval_every, self.cfg.train.num_rounds
        if server_round != last and (every == 0 or server_round % every):
            self._finish_round(server_round)
            return []
        ids = self.select_eval_devices(server_round)
        msgs = self._messages(server_round, ids, EVALUATE, self.eval_broadcast(server_round),
                              self.eval_own(server_round, ids), client_manager)
        return [(proxy, EvaluateIns(params, {})) for proxy, params in msgs]

    def aggregate_evaluate(self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]],
                           failures: list) -> tuple[float | None, dict[str, Any]]:
        import json

        server_round += self.offset
        replies = self._lost(server_round, results, failures)
        for _, res in results:
            replies += decode_replies({}, json.loads(str(res.metrics["devices"])))
        replies.sort(key=lambda r: r.device_id)
        raise_if_eval_incomplete(server_round, sum(map(len, self._sent.values())), replies)
        metrics = summarise_eval(replies)
        self.log.eval_done(metrics)
        self._finish_round(server_round)
        return None, metrics

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict] | None:
        return None  # no centralised evaluation: user state lives on the devices

    # ------------------------------------------------------------------ plumbing
    def _messages(self, rnd: int, ids: list[int], kind: str, broadcast: Arrays,
                  own: dict[int, Arrays], client_manager: ClientManager) -> list[tuple[ClientProxy, Parameters]]:
        proxies = self._proxies(client_manager)
        self._sent = {}
        reduce = None
        if kind == FIT:
            reduce = self.reduce_spec() if self.shard > 1 and self.cfg.sim.host_reduce else None
            self._reduce = reduce
        out = []
        for slot, devs in sorted(route(ids, self.shard, len(proxies)).items()):
            arrays = scoped(BROADCAST, broadcast)
            for d in devs:
                arrays.update(scoped(d, own.get(d, {})))
            meta = {"devices": devs, "round": rnd, "kind": kind, "shard_size": self.shard,
                    "state_dir": str(self.recorder.state_dir.resolve()),
                    "config": self.round_config(rnd, kind)}
            if reduce is not None:
                meta["reduce"] = reduce
            proxy = proxies[slot]
            self._sent[proxy.cid] = devs
            out.append((proxy, ndarrays_to_parameters(pack(arrays, meta))))
        return out

    def _proxies(self, client_manager: ClientManager) -> list[ClientProxy]:
        # Nodes register after the ServerApp starts: wait for all of them, once per run.
        if not self._waited and client_manager.num_available() < self.expected_clients:
            client_manager.wait_for(self.expected_clients, timeout=120)
        self._waited = True
        proxies = sorted(client_manager.all().values(), key=lambda p: p.cid)
        if len(proxies) < self.expected_clients:
            log(30, "only %d of %d Flower clients registered; cohorts are merged",
                len(proxies), self.expected_clients)
        return proxies

    def _lost(self, rnd: int, results: list, failures: list) -> list[DeviceReply]:
        """Every device sent to a Flower client that did not answer, counted failed.

        Flower hands a failed client back as a bare exception (no client named), so the
        lost clients are those that were sent a message and are not among the results.
        """
        answered = {proxy.cid for proxy, _ in results}
        missing = {cid: devs for cid, devs in self._sent.items() if cid not in answered}
        raise_if_nobody_answered(rnd, len(self._sent), len(answered), failures)
        return client_failures(rnd, missing, failures)

    def _account(self, replies: list[DeviceReply]) -> None:
        for r in replies:
            t = self.totals[r.device_id]
            t[f"rounds_{r.status}"] += 1
            for k, v in r.costs.items():
                t[k] += v

    def _finish_round(self, rnd: int) -> None:
        record = self.log.end(rnd)
        self.recorder.log_round(record)
        self.recorder.save_checkpoint(rnd, self.state_dict())
        if not self.cfg.output.quiet:
            log(INFO, "%s", progress_line(record, self.cfg.train.num_rounds))
        if rnd == self.cfg.train.num_rounds:
            self.finish()

    def finish(self) -> None:
        """Write devices.csv, the final model and the final summary."""
        rows = [{"device_id": d, **dict(t)} for d, t in sorted(self.totals.items())]
        self.recorder.write_devices(rows)
        self.recorder.write_model(self.global_arrays)
        self.recorder.write_summary(self.log.summary(self.select_metric))

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


def decode_replies(scopes: dict[str, Arrays], info: dict[str, Any]) -> list[DeviceReply]:
    """Per-device replies from a client's upload scopes + its JSON report."""
    out = []
    for key, rec in info.items():
        out.append(DeviceReply(
            device_id=int(key), upload=scopes.get(key, {}), metrics=rec.get("metrics", {}),
            num_examples=int(rec.get("n", 0)), status=rec.get("status", "ok"),
            error=rec.get("error", ""), costs=rec.get("costs", {}),
        ))
    return out
