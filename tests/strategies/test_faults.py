"""strategies.faults: how lost Flower clients are counted and when a round stops the run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from fedrec.errors import FedrecError
from fedrec.protocol import DeviceReply
from strategies.faults import (
    WorkerLost,
    client_failures,
    failure_reason,
    raise_if_all_failed,
    raise_if_diverged,
    raise_if_eval_incomplete,
    raise_if_nobody_answered,
)


@dataclass
class Status:
    message: str


@dataclass
class Res:
    status: Status


def test_failure_reason_is_one_line_of_an_exception_or_a_result():
    assert failure_reason(RuntimeError("boom\nTraceback ...")) == "RuntimeError: boom"
    assert failure_reason((object(), Res(Status("client said no")))) == "client said no"
    assert failure_reason(ValueError("x" * 500)) == ("ValueError: " + "x" * 500)[:300]
    assert failure_reason(RuntimeError("")) == "RuntimeError:"


def test_every_device_of_a_silent_client_is_failed_with_the_reason():
    lost = client_failures(3, {"c1": [4, 5], "c7": [9]}, [TimeoutError("TTL expired")])
    assert [(r.device_id, r.status, r.error) for r in lost] == [
        (d, "failed", "client did not answer: TimeoutError: TTL expired") for d in (4, 5, 9)]
    two = client_failures(3, {"c1": [4]}, [KeyError("a"), OSError("b"), KeyError("a")])
    assert two[0].error == "client did not answer: KeyError: 'a' (and 1 other errors)"
    assert client_failures(3, {}, [RuntimeError("x")]) == []
    assert client_failures(3, {"c1": [1]}, [])[0].error == "client did not answer: no reply"


def test_a_dead_worker_raises_worker_lost():
    died = ValueError("Message contains an Error (reason: <class 'ray.exceptions.ActorDiedError'>"
                      ":<'The actor died unexpectedly before finishing this task.)")
    with pytest.raises(WorkerLost, match=r"^round 2: a simulation worker died while running 3 "):
        client_failures(2, {"c1": [1, 2], "c2": [3]}, [died])
    assert issubclass(WorkerLost, FedrecError)


def test_nobody_answered_names_the_reason_and_the_fix():
    raise_if_nobody_answered(1, 3, 1, [RuntimeError("x")])        # someone answered
    raise_if_nobody_answered(1, 0, 0, [])                          # nothing was sent
    with pytest.raises(FedrecError, match=r"^round 4: none of the 2 Flower clients answered "
                                          r"\(KeyError: 'pixel9'\); see the ClientApp error"):
        raise_if_nobody_answered(4, 2, 0, [KeyError("pixel9")])
    with pytest.raises(FedrecError, match="raise round-timeout-s"):
        raise_if_nobody_answered(1, 2, 0, [RuntimeError("Message expired due to its TTL")])


def test_all_failed_raises_with_first_error():
    replies = [DeviceReply(device_id=3, status="failed", error="ValueError: boom"),
               DeviceReply(device_id=5, status="dropped"),
               DeviceReply(device_id=8, status="failed", error="KeyError: x")]
    with pytest.raises(FedrecError, match=r"^round 2: all 2 devices that ran failed; "
                                          r"first error: device 3: ValueError: boom$"):
        raise_if_all_failed(2, replies)
    raise_if_all_failed(1, [DeviceReply(device_id=1, status="failed", error="e"), DeviceReply(2)])
    raise_if_all_failed(1, [DeviceReply(device_id=1, status="dropped")])


def test_an_incomplete_evaluation_stops_the_run():
    ok = [DeviceReply(device_id=d, metrics={"hr": 1.0}) for d in range(3)]
    raise_if_eval_incomplete(1, 3, ok)
    with pytest.raises(FedrecError, match=r"^round 1: only 3 of 4 devices were evaluated$"):
        raise_if_eval_incomplete(1, 4, ok)
    bad = [*ok, DeviceReply(device_id=7, status="failed", error="OSError: disk")]
    with pytest.raises(FedrecError, match=r"only 3 of 4 devices were evaluated; first error: "
                                          r"device 7: OSError: disk$"):
        raise_if_eval_incomplete(1, 4, bad)


def test_divergence_in_the_model_or_in_a_loss():
    fine = {"w": np.ones(3, np.float32), "ids": np.arange(3)}
    raise_if_diverged(1, fine, [DeviceReply(device_id=0, metrics={"loss": 0.5}),
                                DeviceReply(device_id=1, metrics={"loss": None})])
    with pytest.raises(FedrecError, match=r"non-finite values in b, w after aggregation\); lower lr"):
        raise_if_diverged(2, {"w": np.array([np.nan]), "b": np.array([np.inf]), "ok": np.zeros(1)}, [])
    with pytest.raises(FedrecError, match=r"^round 3: the model diverged \(non-finite training loss "
                                          r"on 1 devices \(first: device 6\)\)"):
        raise_if_diverged(3, fine, [DeviceReply(device_id=6, metrics={"loss": float("nan")})])
