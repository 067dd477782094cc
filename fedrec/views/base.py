"""The typed contract between a protocol and its data: what device d holds, what the cloud reads.

A *federated view* is the simulation's ground truth. It hands each simulated device its own
data (``device(d)``) and the cloud an explicit, smaller view (``cloud()``): a frozen
dataclass whose fields (and public methods) are everything the cloud side of a protocol may
read. Implementations:

==========================================  ====================  ============================
view                                        device(d)             cloud()
==========================================  ====================  ============================
``fedrec.federated.LeaveOneOutData``        ``DeviceData``        ``LooCloud``
``fedrec.c3drec.timeline.TimelineData``     ``DeviceTimeline``    ``TimelineCloud``
``fedrec.views.samples.SampleView``         ``DeviceSamples``     ``SampleCloud``
==========================================  ====================  ============================

``RecordingView`` wraps a view and records the attribute names read through it, so a test
can run a strategy's cloud side on the wrapped view and check that it read nothing outside
``cloud_names(view.cloud())`` (``tests/views/test_cloud_reads.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

DeviceT_co = TypeVar("DeviceT_co", covariant=True)
CloudT_co = TypeVar("CloudT_co", covariant=True)


@runtime_checkable
class CloudView(Protocol):
    """The least every cloud view holds."""

    @property
    def n_devices(self) -> int: ...

    @property
    def n_items(self) -> int: ...


@runtime_checkable
class FederatedView(Protocol[DeviceT_co, CloudT_co]):
    """Per-device data plus the cloud's view. Device ids are ``0..n_devices-1``."""

    @property
    def n_devices(self) -> int: ...

    @property
    def n_items(self) -> int: ...

    def device(self, d: int) -> DeviceT_co:
        """Everything device ``d`` holds (its own rows only)."""
        ...

    def cloud(self) -> CloudT_co:
        """Everything the cloud may read (``cloud_names`` lists it)."""
        ...


def cloud_names(cloud: object) -> frozenset[str]:
    """The names a cloud view offers: its dataclass fields and public methods/properties."""
    names = set()
    if dataclasses.is_dataclass(cloud):
        names = {f.name for f in dataclasses.fields(cloud)}
    names |= {n for n in dir(type(cloud)) if not n.startswith("_")}
    return frozenset(names)


class RecordingView:
    """A stand-in for a view that records every attribute read through it (``reads``).

    Only the top-level names are recorded (``fed.cloud_pre.all()`` records ``cloud_pre``).
    """

    def __init__(self, view: object) -> None:
        object.__setattr__(self, "_view", view)
        object.__setattr__(self, "reads", set())

    def __getattr__(self, name: str) -> Any:
        self.reads.add(name)
        return getattr(self._view, name)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a view is read-only; cannot set {name!r}")


def cloud_reads(run: Callable[[RecordingView], object], view: object) -> set[str]:
    """The attribute names ``run(proxy)`` reads from ``view`` (wrapped in a RecordingView)."""
    proxy = RecordingView(view)
    run(proxy)
    return set(proxy.reads)


def reads_outside_cloud(reads: set[str], view: FederatedView[Any, Any]) -> set[str]:
    """The names in ``reads`` that ``view.cloud()`` does not offer."""
    return set(reads) - cloud_names(view.cloud())
