"""A round in which every device that ran failed stops the run with the first error."""

from __future__ import annotations

import pytest

from clients.device import DeviceReply
from fedrec.errors import FedrecError
from strategies.base import raise_if_all_failed


def test_all_failed_raises_with_first_error():
    replies = [DeviceReply(device_id=3, status="failed", error="ValueError: boom"),
               DeviceReply(device_id=5, status="dropped"),
               DeviceReply(device_id=8, status="failed", error="KeyError: x")]
    with pytest.raises(FedrecError, match=r"^round 2: all 2 devices that ran failed; "
                                          r"first error: device 3: ValueError: boom$"):
        raise_if_all_failed(2, replies)


def test_some_ok_or_all_dropped_is_not_an_error():
    raise_if_all_failed(1, [DeviceReply(device_id=1, status="failed", error="e"),
                            DeviceReply(device_id=2)])
    raise_if_all_failed(1, [DeviceReply(device_id=1, status="dropped")])
    raise_if_all_failed(1, [])
