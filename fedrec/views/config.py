"""Settings of the sample view (``fedrec.views.samples``): frozen, validated, one-line errors.

Proposed run-config keys (the names in the errors): ``view-history-len``, ``view-negatives``,
``view-exposures``, ``view-exposure-sampler``, ``view-windows``, ``view-test-last``,
``view-valid-last``, ``view-device-last``, ``view-device-frac``, ``view-day-origin``,
``view-device-day``, ``view-valid-day``, ``view-test-day``, ``view-cloud-parts``,
``view-cloud-profiles``, ``view-min-item-interactions``; the data keys ``eval-protocol``,
``eval-negatives``, ``max-devices``, ``min-user-interactions`` and ``seed`` are shared with
``DataConfig`` (``SampleViewConfig.from_data``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from fedrec.errors import ConfigError

if TYPE_CHECKING:
    from fedrec.config import DataConfig

#: the parts of each device's sequence, in time order (codes 0..3 in ``part`` arrays)
PARTS: tuple[str, ...] = ("pre", "device", "valid", "test")
PRE, DEVICE, VALID, TEST = range(4)
SAMPLERS: tuple[str, ...] = ("uniform", "popularity")
DAY_SECONDS = 86_400


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class Windows:
    """How each device's time-ordered sequence is cut into pre / device / valid / test.

    ``by = "position"`` (any data): per user, from the end of the sequence, the last
    ``test_last`` events are test, the ``valid_last`` before them valid, then ``device_last``
    events (or, when 0, ``floor(device_frac * rest)`` of the rest) are the device part, the
    remainder pre. Users with at most ``test_last + valid_last`` events keep every event in
    pre/device (not evaluated). DCCL: 1/1/0/0.5; MC-SF: test 5, valid 0, device 5.

    ``by = "days"`` (data with time): global calendar days ``day = (ts - day_origin) //
    86400`` (``day_origin`` -1: UTC midnight of the first event); pre is ``day <
    device_day``, device ``[device_day, valid_day)``, valid ``[valid_day, test_day)``, test
    ``day >= test_day``. Every event carries its ``day`` in both modes when the data has time,
    so a protocol can also say "day d" directly.
    """

    by: str = "position"
    test_last: int = 1
    valid_last: int = 1
    device_last: int = 0
    device_frac: float = 0.5
    day_origin: int = -1
    device_day: int = 0
    valid_day: int = 0
    test_day: int = 0

    def __post_init__(self) -> None:
        _check(self.by in ("position", "days"),
               f"view-windows = {self.by!r}; use 'position' or 'days'")
        for key, value in (("view-test-last", self.test_last), ("view-valid-last", self.valid_last),
                           ("view-device-last", self.device_last)):
            _check(value >= 0, f"{key} must be >= 0, got {value}")
        _check(0.0 <= self.device_frac <= 1.0,
               f"view-device-frac must be in [0, 1], got {self.device_frac}")
        _check(self.device_day <= self.valid_day <= self.test_day,
               f"view-device-day {self.device_day}, view-valid-day {self.valid_day}, "
               f"view-test-day {self.test_day}: need device <= valid <= test")


@dataclass(frozen=True)
class SampleViewConfig:
    """Everything that shapes a ``SampleView`` (see ``fedrec.views.samples``).

    history_len: L, history items kept per sample (the most recent).
    negatives: sampled training negatives per positive (label 0, kind ``negative``).
    exposures: simulated exposures (shown, not clicked) per positive (kind ``exposure``).
    exposure_sampler: ``uniform`` or ``popularity`` (proportional to the item's events in
        the pre and device parts).
    eval_protocol: ``sampled`` (each held-out event gets ``eval_negatives`` negatives) or
        ``full`` (rank every item; no negatives drawn).
    windows: the pre / device / valid / test cut (``Windows``).
    cloud_parts: parts whose events the cloud may read (``SampleCloud.logs``).
    cloud_profiles: the cloud may read the user profiles (DCCL's MoMoDistill does).
    max_devices: keep the first N users by raw id (0 = all).
    min_user_interactions / min_item_interactions: k-core filter (0 = off).
    seed: every draw is a function of (seed, device, event).
    """

    history_len: int = 50
    negatives: int = 1
    exposures: int = 0
    exposure_sampler: str = "uniform"
    eval_protocol: str = "sampled"
    eval_negatives: int = 100
    windows: Windows = field(default_factory=Windows)
    cloud_parts: tuple[str, ...] = ("pre",)
    cloud_profiles: bool = False
    max_devices: int = 0
    min_user_interactions: int = 0
    min_item_interactions: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.history_len >= 1, f"view-history-len must be >= 1, got {self.history_len}")
        _check(self.negatives >= 0, f"view-negatives must be >= 0, got {self.negatives}")
        _check(self.exposures >= 0, f"view-exposures must be >= 0, got {self.exposures}")
        _check(self.exposure_sampler in SAMPLERS, f"view-exposure-sampler = "
               f"{self.exposure_sampler!r}; use one of {', '.join(SAMPLERS)}")
        _check(self.eval_protocol in ("sampled", "full"),
               f"eval-protocol = {self.eval_protocol!r}; use 'sampled' or 'full'")
        _check(self.eval_negatives >= 1, f"eval-negatives must be >= 1, got {self.eval_negatives}")
        bad = sorted(set(self.cloud_parts) - set(PARTS))
        _check(not bad, f"view-cloud-parts names {bad}; use parts among {', '.join(PARTS)}")
        for key, value in (("max-devices", self.max_devices),
                           ("min-user-interactions", self.min_user_interactions),
                           ("view-min-item-interactions", self.min_item_interactions),
                           ("seed", self.seed)):
            _check(value >= 0, f"{key} must be >= 0, got {value}")

    @property
    def cloud_codes(self) -> tuple[int, ...]:
        return tuple(PARTS.index(p) for p in self.cloud_parts)

    @classmethod
    def from_data(cls, data: DataConfig, **view: Any) -> SampleViewConfig:
        """The shared settings of a ``DataConfig`` (eval protocol and negatives, device limit,
        user filter, seed) plus the view's own fields."""
        shared = {"eval_protocol": data.eval_protocol, "eval_negatives": data.eval_negatives,
                  "max_devices": data.max_devices, "seed": data.seed,
                  "min_user_interactions": data.min_user_interactions}
        return replace(cls(), **{**shared, **view})
