"""The sample view shared by the CTR-style protocols (DCCL, CoDA, MC-SF).

Device d holds its time-ordered behaviour sequence and, for every event in it, one CTR
sample per candidate item: the event's item (label 1, kind ``POSITIVE``), ``negatives``
sampled items (label 0, ``NEGATIVE``) and ``exposures`` simulated impressions (shown, not
clicked: label 0, ``EXPOSURE``; MC-SF's exposure sequence). A sample carries the candidate's
side features (category, padded genres), the user's history before that moment (the last
``history_len`` items, oldest first, padded with -1 at the end), and the event's part
(pre / device / valid / test, ``fedrec.views.config.Windows``) and day. Every held-out event
(valid or test part) also gets evaluation candidates: the held-out item plus
``eval_negatives`` items the user never touched, drawn once; valid and test draws are
independent; ``eval_protocol = "full"`` draws none (rank every item).

Negatives, exposures and evaluation negatives are never items the user touched, and each is
a function of (seed, device, event) only (``fedrec.views.draws``): a device's samples are
the same whichever other devices are built. The cloud reads ``cloud()`` only: catalogue side
features, the events of ``cloud_parts`` (and their counts), profiles if allowed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import numpy as np

from fedrec.config import DataConfig
from fedrec.data.schema import Dataset
from fedrec.federated import load_for_run
from fedrec.views.config import DEVICE, TEST, VALID, SampleViewConfig
from fedrec.views.draws import (
    EXPOSURE_STREAM,
    NEGATIVE_STREAM,
    TEST_STREAM,
    VALID_STREAM,
    Touched,
    check_free,
    draw_excluding,
    row_keys,
)
from fedrec.views.features import ItemSide, Profiles
from fedrec.views.sequence import EventLog, event_log

POSITIVE, NEGATIVE, EXPOSURE = 0, 1, 2          # ``Samples.kind`` codes


@dataclass(frozen=True, eq=False)
class Samples:
    """CTR samples of one device, grouped by event in time order: per event the positive,
    then its negatives, then its exposures.

    item, event, day: int64 [S] (``event`` indexes the device's sequence); label, kind, part:
    int8 [S]; history: int32 [S, L] (-1 padded at the end); hist_len: int32 [S];
    category: int64 [S] (-1 unknown); genres: int32 [S, G] (-1 padded).
    """

    item: np.ndarray
    label: np.ndarray
    kind: np.ndarray
    event: np.ndarray
    part: np.ndarray
    day: np.ndarray
    history: np.ndarray
    hist_len: np.ndarray
    category: np.ndarray
    genres: np.ndarray

    def __len__(self) -> int:
        return len(self.item)

    def select(self, mask: np.ndarray) -> Samples:
        """The samples where ``mask`` (bool [S]) holds, e.g. ``s.select(s.part == DEVICE)``."""
        return Samples(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})


@dataclass(frozen=True, eq=False)
class EvalSet:
    """Held-out events of one part: event int64 [E], target int64 [E], negatives int64
    [E, N] (None: full ranking), history int32 [E, L], hist_len int32 [E]."""

    event: np.ndarray
    target: np.ndarray
    negatives: np.ndarray | None
    history: np.ndarray
    hist_len: np.ndarray

    @property
    def candidates(self) -> np.ndarray:
        """[E, 1 + N] with the target in column 0 (sampled protocol only)."""
        if self.negatives is None:
            raise ValueError("eval-protocol = full draws no negatives: every item is a candidate")
        return np.column_stack([self.target, self.negatives])


@dataclass(frozen=True, eq=False)
class DeviceSamples:
    """What device ``device_id`` holds. items, ts, day: int64 [n] (its sequence in time
    order); part, behavior: int8 [n]; profile: int64 [P] or None; side: the public catalogue."""

    device_id: int
    items: np.ndarray
    ts: np.ndarray
    day: np.ndarray
    part: np.ndarray
    behavior: np.ndarray
    profile: np.ndarray | None
    samples: Samples
    valid: EvalSet
    test: EvalSet
    side: ItemSide


@dataclass(frozen=True, eq=False)
class CloudLogs:
    """Events the cloud may read (parts ``SampleCloud.parts``): owner, item, ts, day int64
    [M], part int8 [M], grouped by device in time order."""

    owner: np.ndarray
    item: np.ndarray
    ts: np.ndarray
    day: np.ndarray
    part: np.ndarray


@dataclass(frozen=True, eq=False)
class SampleCloud:
    """What the cloud may read. popularity: int64 [I] events per item within ``logs``."""

    n_devices: int
    n_items: int
    items: ItemSide
    parts: tuple[str, ...]
    logs: CloudLogs
    popularity: np.ndarray
    profiles: Profiles | None


@dataclass(frozen=True, eq=False)
class Draws:
    """Seeded draws for a set of devices' events: rows int64 [M] (event rows, grouped by
    device); negatives [M, k], exposures [M, e]; ``valid_rows``/``test_rows`` [E] with
    ``valid``/``test`` negatives [E, N] (None: full ranking)."""

    rows: np.ndarray
    negatives: np.ndarray
    exposures: np.ndarray
    valid_rows: np.ndarray
    valid: np.ndarray | None
    test_rows: np.ndarray
    test: np.ndarray | None


class SampleView:
    """The sample view of one event log; ``device(d)`` builds device d's arrays from the
    flat draws made once for every device (vectorised) at construction."""

    def __init__(self, log: EventLog, cfg: SampleViewConfig) -> None:
        self.log, self.cfg = log, cfg
        self.touched = Touched.of(log.owner, log.item, log.n_items)
        train = log.part <= DEVICE
        #: exposure weights: events per item in the pre and device parts [I]
        self.sampler_popularity = np.bincount(log.item[train], minlength=log.n_items)
        self._check()
        self.draws = self.draws_for(np.arange(self.n_devices))

    @property
    def n_devices(self) -> int:
        return self.log.n_devices

    @property
    def n_items(self) -> int:
        return self.log.n_items

    def _weights(self) -> np.ndarray | None:
        return self.sampler_popularity if self.cfg.exposure_sampler == "popularity" else None

    def _check(self) -> None:
        c, log, every = self.cfg, self.log, np.arange(self.n_devices)
        check_free(self.touched, every, self.n_devices, c.negatives, None, "negatives",
                   "view-negatives")
        check_free(self.touched, every, self.n_devices, c.exposures, self._weights(),
                   "exposures", "view-exposures")
        if c.eval_protocol == "sampled":
            held = np.unique(log.owner[log.part >= VALID])
            check_free(self.touched, held, self.n_devices, c.eval_negatives, None,
                       "evaluation negatives", "eval-negatives")

    def draws_for(self, devices: np.ndarray) -> Draws:
        """Every draw of ``devices`` (int [K]); row by row equal to the draws of any other
        device set containing them."""
        c, log = self.cfg, self.log
        rows = log.rows_of(np.asarray(devices, np.int64))                   # [M]

        def draw(r: np.ndarray, stream: int, count: int,
                 weights: np.ndarray | None = None) -> np.ndarray:
            keys = row_keys(c.seed, stream, log.owner[r], log.pos[r])
            return draw_excluding(keys, log.owner[r], count, self.touched, weights)

        held = {part: rows[log.part[rows] == part] for part in (VALID, TEST)}
        sampled = c.eval_protocol == "sampled"
        return Draws(
            rows, draw(rows, NEGATIVE_STREAM, c.negatives),
            draw(rows, EXPOSURE_STREAM, c.exposures, self._weights()),
            held[VALID], draw(held[VALID], VALID_STREAM, c.eval_negatives) if sampled else None,
            held[TEST], draw(held[TEST], TEST_STREAM, c.eval_negatives) if sampled else None)

    def device(self, d: int) -> DeviceSamples:
        log, lo, hi = self.log, int(self.log.indptr[d]), int(self.log.indptr[d + 1])
        items = log.item[lo:hi]
        hist, hlen = histories(items, self.cfg.history_len)                  # [n, L], [n]
        profile = None if log.profiles is None else log.profiles.codes[d]
        return DeviceSamples(
            d, items, log.ts[lo:hi], log.day[lo:hi], log.part[lo:hi], log.behavior[lo:hi],
            profile, self._samples(lo, hi, hist, hlen),
            _eval(lo, hi, items, self.draws.valid_rows, self.draws.valid, hist, hlen),
            _eval(lo, hi, items, self.draws.test_rows, self.draws.test, hist, hlen), log.items)

    def _samples(self, lo: int, hi: int, hist: np.ndarray, hlen: np.ndarray) -> Samples:
        # self.draws covers every device, so its rows are 0..N-1: event rows index it directly
        dr, log, side = self.draws, self.log, self.log.items
        cand = np.column_stack([log.item[lo:hi], dr.negatives[lo:hi], dr.exposures[lo:hi]])
        per = cand.shape[1]                                                   # 1 + k + e
        kind = np.tile(np.repeat(np.array([POSITIVE, NEGATIVE, EXPOSURE], np.int8),
                                 [1, self.cfg.negatives, self.cfg.exposures]), hi - lo)  # [S]
        event = np.repeat(np.arange(hi - lo), per)                            # [S]
        item = cand.ravel()
        return Samples(item, (kind == POSITIVE).astype(np.int8), kind, event,
                       log.part[lo:hi][event], log.day[lo:hi][event], hist[event], hlen[event],
                       side.category[item], side.genres[item])

    @functools.cached_property
    def _cloud(self) -> SampleCloud:
        log, codes = self.log, self.cfg.cloud_codes
        keep = np.isin(log.part, codes)
        logs = CloudLogs(log.owner[keep], log.item[keep], log.ts[keep], log.day[keep],
                         log.part[keep])
        return SampleCloud(self.n_devices, self.n_items, log.items, self.cfg.cloud_parts, logs,
                           np.bincount(logs.item, minlength=self.n_items),
                           log.profiles if self.cfg.cloud_profiles else None)

    def cloud(self) -> SampleCloud:
        return self._cloud


def _eval(lo: int, hi: int, items: np.ndarray, rows: np.ndarray, negatives: np.ndarray | None,
          hist: np.ndarray, hlen: np.ndarray) -> EvalSet:
    """The held-out events among rows ``lo:hi`` (one device) of a part's draws."""
    a, b = np.searchsorted(rows, [lo, hi])
    event = rows[a:b] - lo                                                    # [E]
    return EvalSet(event, items[event], None if negatives is None else negatives[a:b],
                   hist[event], hlen[event])


def histories(items: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """For each event t, the ``length`` items before it, oldest first, -1 padded at the end.

    items int [n] -> (int32 [n, length], int32 [n] lengths)
    """
    t = np.arange(len(items))
    start = np.maximum(t - length, 0)                                         # [n]
    idx = start[:, None] + np.arange(length)[None, :]                        # [n, L]
    ok = idx < t[:, None]
    hist = np.where(ok, items[np.minimum(idx, max(len(items) - 1, 0))], -1).astype(np.int32)
    return hist, (t - start).astype(np.int32)


def resample_negatives(dev: DeviceSamples, n_items: int, count: int, seed: int,
                       epoch: int) -> np.ndarray:
    """Fresh training negatives for every event of ``dev``, for protocols that resample each
    epoch (DCCL): a function of (seed, device, event, epoch); epoch 0 gives the view's own.

    Runs on the device from its own data. -> int64 [n_events, count]
    """
    n = len(dev.items)
    keys = row_keys(seed, NEGATIVE_STREAM + (epoch << 8), np.full(n, dev.device_id), np.arange(n))
    mine = Touched.of(np.zeros(n, np.int64), dev.items, n_items)          # owner 0: this device
    return draw_excluding(keys, np.zeros(n, np.int64), count, mine)


def build_sample_view(dataset: Dataset, cfg: SampleViewConfig) -> SampleView:
    """Filter, window and sample ``dataset`` (see the module docstring)."""
    return SampleView(event_log(dataset, cfg), cfg)


@functools.lru_cache(maxsize=2)
def prepare_samples(data: DataConfig, cfg: SampleViewConfig) -> SampleView:
    """The run's dataset (``data.dataset``) as a sample view, once per process."""
    return build_sample_view(load_for_run(data), cfg)
