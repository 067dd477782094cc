"""One round driver for every protocol and both ways of running it.

A protocol declares its round as a sequence of phases (``strategies.base.Phase``): device
phases (a message to each Flower client hosting selected devices, the devices' work, the
replies) and cloud-only steps, each possibly every k rounds. ``run_round`` walks them; how
messages reach devices is a ``Transport``:

* ``FlowerTransport``: Flower's own client proxies and ``fit_clients`` thread pool (the
  ServerApp runs the protocol with ``PhasedServer``, a ``flwr.server.Server`` whose
  ``fit`` drives our rounds);
* ``InProcessTransport``: ``DeviceHost`` objects called directly (the plain loop: no Flower,
  no Ray; same messages, same hosts, same numbers).

Sampling, routing, failures, costs, progress, checkpoints and results are the strategy's
(written once in ``strategies.base``); nothing here knows a protocol.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
from flwr.common import FitIns, GetPropertiesIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.logger import log
from flwr.server import Server
from flwr.server.client_manager import ClientManager
from flwr.server.history import History
from flwr.server.server import fit_clients

from fedrec.payload import unpack
from strategies.faults import WorkerLost

NDArrays = list[np.ndarray]
#: (client id, the reply's arrays) for every client that answered
Results = list[tuple[str, NDArrays]]


class Transport(Protocol):
    """Delivers one message per Flower client and collects the replies."""

    def slots(self) -> list[str]:
        """Client ids in a stable order (the strategy routes shards onto them)."""
        ...

    def exchange(self, rnd: int, messages: Sequence[tuple[str, NDArrays]]) -> tuple[Results, list]:
        """Send each client its message; (replies, failures). A failure is an exception or a
        (client id, reason) pair; a client neither in replies nor failures did not answer."""
        ...


class PhasedStrategy(Protocol):
    """What the driver needs of a strategy (strategies.base.DeviceStrategy implements it)."""

    offset: int

    def begin_round(self, rnd: int) -> None: ...
    def round_phases(self, rnd: int) -> list[Any]: ...
    def phase_messages(self, phase: Any, rnd: int, slots: list[str]) -> list[tuple[str, NDArrays]]: ...
    def phase_results(self, phase: Any, rnd: int, results: Results, failures: list) -> None: ...
    def cloud_phase(self, phase: Any, rnd: int) -> None: ...
    def end_round(self, rnd: int) -> None: ...


def run_round(strategy: PhasedStrategy, rnd: int, transport: Transport) -> None:
    """One round: every phase that runs in ``rnd``, in order."""
    strategy.begin_round(rnd)
    for phase in strategy.round_phases(rnd):
        if phase.device:
            messages = strategy.phase_messages(phase, rnd, transport.slots())
            results, failures = transport.exchange(rnd, messages)
            strategy.phase_results(phase, rnd, results, failures)
        else:
            strategy.cloud_phase(phase, rnd)
    strategy.end_round(rnd)


def run_rounds(strategy: PhasedStrategy, first: int, last: int, transport: Transport) -> None:
    for rnd in range(first, last + 1):
        run_round(strategy, rnd, transport)


class FlowerTransport:
    """Flower's client proxies: a legacy ``fit`` message per client, Flower's thread pool."""

    def __init__(self, client_manager: ClientManager, expected: int, timeout: float | None,
                 max_workers: int | None = None, wait_s: float = 120.0) -> None:
        self.client_manager = client_manager
        self.expected = expected
        self.timeout = timeout
        self.max_workers = max_workers
        self.wait_s = wait_s
        self._proxies: dict[str, Any] | None = None
        self._order: list[str] = []

    def slots(self) -> list[str]:
        # Nodes register after the ServerApp starts: wait for all of them, once per run.
        if self._proxies is None:
            if self.client_manager.num_available() < self.expected:
                self.client_manager.wait_for(self.expected, timeout=int(self.wait_s))
            self._proxies = dict(self.client_manager.all())
            if len(self._proxies) < self.expected:
                log(30, "only %d of %d Flower clients registered; cohorts are merged",
                    len(self._proxies), self.expected)
            self._order = partition_order(self._proxies, self.timeout, self.max_workers)
        return self._order

    def exchange(self, rnd: int, messages: Sequence[tuple[str, NDArrays]]) -> tuple[Results, list]:
        assert self._proxies is not None, "slots() first"
        instructions = [(self._proxies[cid], FitIns(ndarrays_to_parameters(nd), {}))
                        for cid, nd in messages]
        results, failures = fit_clients(instructions, self.max_workers, self.timeout, rnd)
        replies = [(proxy.cid, parameters_to_ndarrays(res.parameters)) for proxy, res in results]
        return replies, [(f[0].cid, f[1]) if isinstance(f, tuple) else f for f in failures]


def partition_order(proxies: dict[str, Any], timeout: float | None,
                    max_workers: int | None) -> list[str]:
    """Client ids in the order of their node's ``partition-id`` (node config; Flower's
    simulation numbers its nodes the same way), asked once per run with ``get_properties``.

    Shard routing follows this order, so a SuperNode hosts the same devices every round and
    after a resume, whatever ids the nodes got when they registered: their private state
    stays where it is. Clients that give no partition (or fail to answer) come last, in id
    order.
    """
    def ask(proxy: Any) -> int | None:
        try:
            res = proxy.get_properties(GetPropertiesIns({}), timeout, None)
        except Exception:  # noqa: BLE001 - a client that cannot answer goes last
            return None
        value = res.properties.get("partition-id")
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        parts = dict(zip(proxies, pool.map(ask, proxies.values()), strict=True))
    missing = sorted(cid for cid, p in parts.items() if p is None)
    if missing and len(missing) < len(parts):
        log(30, "%d Flower client(s) gave no partition-id; they host the last shards",
            len(missing))
    return sorted((c for c in parts if parts[c] is not None),
                  key=lambda c: (parts[c], c)) + missing


class InProcessTransport:
    """Hosts called in this process, one per client slot (the plain loop). With ``record``,
    every exchange is kept in ``seen`` as (round, phase kind, client id, message, reply)."""

    def __init__(self, hosts: Sequence[Callable[[NDArrays], NDArrays]], record: bool = False) -> None:
        self.hosts = {str(i): h for i, h in enumerate(hosts)}
        self.record = record
        self.seen: list[tuple[int, str, str, NDArrays, NDArrays]] = []

    def slots(self) -> list[str]:
        return sorted(self.hosts, key=int)

    def exchange(self, rnd: int, messages: Sequence[tuple[str, NDArrays]]) -> tuple[Results, list]:
        replies = [(cid, self.hosts[cid](nd)) for cid, nd in messages]
        if self.record:
            for (cid, nd), (_, reply) in zip(messages, replies, strict=True):
                self.seen.append((rnd, str(unpack(nd)[1]["kind"]), cid, nd, reply))
        return replies, []


class PhasedServer(Server):
    """A ``flwr.server.Server`` whose ``fit`` runs the strategy's phased rounds (the rounds
    after ``strategy.offset``, so a resumed run continues where it stopped)."""

    def fit(self, num_rounds: int, timeout: float | None) -> tuple[History, float]:
        strategy: Any = self.strategy
        transport = FlowerTransport(self.client_manager(), strategy.expected_clients, timeout,
                                    self.max_workers)
        start = timeit.default_timer()
        run_to_end(strategy, strategy.offset + 1, strategy.offset + num_rounds, transport)
        return History(), timeit.default_timer() - start


def run_to_end(strategy: Any, first: int, last: int, transport: Transport) -> None:
    """Rounds ``first..last``, then tell every client the run is over (they drop their
    devices' private state) — also after a failure for good, not after an interruption or a
    dead worker, when the run will be resumed."""
    try:
        run_rounds(strategy, first, last, transport)
    except BaseException as exc:
        if not isinstance(exc, (WorkerLost, KeyboardInterrupt)):
            end_run(strategy, transport)
        raise
    end_run(strategy, transport)


def end_run(strategy: Any, transport: Transport) -> None:
    try:
        transport.exchange(0, strategy.end_messages(transport.slots()))
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide how the run ended
        log(30, "could not tell the clients that the run ended: %s", exc)
