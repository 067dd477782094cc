"""When a round's replies mean the run cannot honestly go on, and how lost devices are counted.

Pure functions over device replies, Flower failures (exceptions or (client, result) pairs)
and arrays; no Flower server objects. Each ``raise_if_*`` raises a one-line FedrecError that
the ServerApp records as the run's failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedrec.errors import FedrecError
from fedrec.protocol import Arrays, DeviceReply

#: substrings of Ray's messages when a worker process died (crash, kill, OOM killer)
WORKER_DEATH = ("ActorDiedError", "RayActorError", "ActorUnavailableError", "actor died",
                "worker died", "WorkerCrashedError", "Worker unexpectedly exits",
                "OutOfMemoryError", "NodeDiedError")


class WorkerLost(FedrecError):
    """A simulation worker process died; the round is abandoned before aggregation.

    Flower 1.41's Ray pool never replaces a dead actor (later messages routed to it fail),
    so the run stops here, its checkpoint of the previous round intact, and
    ``experiments.run`` restarts it from that checkpoint on fresh workers.
    """


def failure_reason(failure: Any) -> str:
    """One line describing a Flower failure: an exception, or a (client, result) pair."""
    if isinstance(failure, BaseException):
        text = f"{type(failure).__name__}: {failure}"
    else:
        status = getattr(failure[1], "status", None)
        text = getattr(status, "message", "") or repr(failure[1])
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else "no reply")[:300]


def _summary(reasons: list[str]) -> str:
    distinct = list(dict.fromkeys(reasons)) or ["no reply"]
    more = f" (and {len(distinct) - 1} other errors)" if len(distinct) > 1 else ""
    return distinct[0] + more


def client_failures(rnd: int, missing: Mapping[str, list[int]], failures: list) -> list[DeviceReply]:
    """A failed reply, with the reason, for every device of every client that did not answer.

    Raises WorkerLost when the reason is a dead simulation worker.
    """
    if not missing:
        return []
    full = [str(f) if isinstance(f, BaseException) else failure_reason(f) for f in failures]
    if any(marker in text for text in full for marker in WORKER_DEATH):
        n = sum(map(len, missing.values()))
        raise WorkerLost(f"round {rnd}: a simulation worker died while running {n} devices "
                         f"({_summary([failure_reason(f) for f in failures])})")
    reason = _summary([failure_reason(f) for f in failures])
    return [DeviceReply(device_id=d, status="failed", error=f"client did not answer: {reason}")
            for devs in missing.values() for d in devs]


def raise_if_nobody_answered(rnd: int, n_sent: int, n_answered: int, failures: list) -> None:
    """A round whose messages all came back as failures trained or evaluated nothing."""
    if n_sent == 0 or n_answered > 0:
        return
    reason = _summary([failure_reason(f) for f in failures])
    hint = ("; raise round-timeout-s (round 1 includes starting Ray) or set it to 0"
            if "timeout" in reason.lower() or "ttl" in reason.lower() else
            "; see the ClientApp error above and in superlink.log")
    raise FedrecError(f"round {rnd}: none of the {n_sent} Flower clients answered ({reason}){hint}")


def raise_if_all_failed(rnd: int, replies: list[DeviceReply]) -> None:
    """Stop the run when no device that ran succeeded: a bug in device code must not be
    silently skipped round after round. (All devices dropping out is not an error.)"""
    failed = [r for r in replies if r.status == "failed"]
    if failed and not any(r.status == "ok" for r in replies):
        raise FedrecError(f"round {rnd}: all {len(failed)} devices that ran failed; "
                          f"first error: device {failed[0].device_id}: {failed[0].error}")


def raise_if_eval_incomplete(rnd: int, asked: int, replies: list[DeviceReply]) -> None:
    """Metrics over fewer devices than were asked describe another population: stop."""
    ok = sum(r.status == "ok" for r in replies)
    if ok >= asked:
        return
    bad = [r for r in replies if r.status != "ok"]
    first = f"; first error: device {bad[0].device_id}: {bad[0].error}" if bad else ""
    raise FedrecError(f"round {rnd}: only {ok} of {asked} devices were evaluated{first}")


def raise_if_diverged(rnd: int, arrays: Arrays, replies: list[DeviceReply]) -> None:
    """NaN/inf in the global model or in a device's training loss: the run has diverged."""
    bad = sorted(k for k, a in arrays.items()
                 if np.asarray(a).dtype.kind == "f" and not np.isfinite(a).all())
    losses = [r.device_id for r in replies
              if r.metrics.get("loss") is not None and not np.isfinite(r.metrics["loss"])]
    if not bad and not losses:
        return
    where = (f"non-finite values in {', '.join(bad)} after aggregation" if bad else
             f"non-finite training loss on {len(losses)} devices (first: device {losses[0]})")
    raise FedrecError(f"round {rnd}: the model diverged ({where}); lower lr or server-lr")
