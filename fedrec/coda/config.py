"""CoDA options: run-config keys ``coda-<field>`` (defaults in pyproject.toml), one frozen
dataclass parsed once (docs/coda.md lists each choice and why)."""

from __future__ import annotations

from dataclasses import dataclass

from fedrec.config import DataConfig
from fedrec.dccl.config import int_list
from fedrec.errors import ConfigError
from fedrec.views.config import SampleViewConfig, Windows

PREFIX = "coda-"
ARMS = ("coda", "local", "cloud")
NEIGHBOURS = ("knn", "random")
FEATURES = ("categories", "items")
DAY_SECONDS = 86_400


@dataclass(frozen=True)
class CoDAConfig:
    """CoDA options (Gu et al.; ``../shared/docs/protocols/coda.md``).

    Time: round r is simulated day ``first_day + r - 1``; a day is ``period_days`` calendar
    days counted from ``origin`` (unix seconds; -1: UTC midnight of the data's first event).
    The cloud trains the global CTR model on every sample before ``first_day``.
    Arms: ``coda`` (matching, filtering, personalised training), ``local`` (personalised
    training on local samples only), ``cloud`` (the global model, no device training); the
    cloud model's scores are reported beside every arm (``cloud_`` metrics).
    Cloud: ``k`` neighbours (``neighbours = knn`` with faiss exact L2 on z-scored user vectors,
    or ``random`` users), user vector = ``feature`` (``categories``: category-visit histogram
    over the last ``feature_days`` days; ``items``: mean item embedding of the global model
    over the same window), matched samples = the neighbours' samples of the last
    ``match_days`` days, shuffled, cut into batches of ``batch`` (a fragment joins the last
    batch while it stays <= ``batch_max``), at most ``max_batches`` per device per day.
    Device: classifier on 1/3 of the matched samples (label 0) and the local ones (label 1),
    ``clf_epochs`` of Adam ``clf_lr``; keeps scored samples >= ``sigma`` (``filter = false``:
    keeps every matched sample); tables capped at ``local_cap`` / ``outside_cap`` (halved on
    overflow); local samples at most ``valid_age`` days old validate, up to ``max_age`` train;
    CTR training starts every ``trigger`` filtered samples and when the day's batches are
    exhausted; SGD ``lr`` (the run's ``lr``), mini-batch ``device_batch``; a step is kept only
    if it improves the local validation AUC (``accept = false``: every step is kept).
    Model: DIN over item + category embeddings of ``dim`` each, ``attention`` and ``hidden``
    widths, history of ``history_len`` items; classifier embedding ``clf_dim``, MLP ``clf_hidden``.
    Samples: each click plus ``exposures`` simulated exposures (label 0), drawn by popularity.
    Metrics: ``ctr_k`` for the CTR proxy (clicks among the top-k of a device's day).
    """

    arm: str = "coda"
    origin: int = -1
    period_days: int = 1
    first_day: int = 2
    exposures: int = 4
    history_len: int = 20
    dim: int = 16
    attention: str = "16"
    hidden: str = "32,16"
    cloud_epochs: int = 1
    cloud_lr: float = 1e-2
    cloud_batch: int = 256
    k: int = 100
    neighbours: str = "knn"
    feature: str = "categories"
    feature_days: int = 7
    match_days: int = 1
    batch: int = 25
    batch_max: int = 40
    max_batches: int = 12
    filter: bool = True
    sigma: float = 0.2
    clf_dim: int = 3
    clf_hidden: str = "16,8"
    clf_epochs: int = 2
    clf_lr: float = 1e-2
    local_cap: int = 200
    outside_cap: int = 200
    valid_age: int = 3
    max_age: int = 7
    trigger: int = 100
    device_batch: int = 32
    accept: bool = True
    ctr_k: int = 5

    def __post_init__(self) -> None:
        if self.arm not in ARMS:
            raise ConfigError(f"{PREFIX}arm = {self.arm!r}; use one of {', '.join(ARMS)}")
        if self.neighbours not in NEIGHBOURS:
            raise ConfigError(f"{PREFIX}neighbours = {self.neighbours!r}; use one of "
                              f"{', '.join(NEIGHBOURS)}")
        if self.feature not in FEATURES:
            raise ConfigError(f"{PREFIX}feature = {self.feature!r}; use one of "
                              f"{', '.join(FEATURES)}")
        for key, value in (("period-days", self.period_days), ("history-len", self.history_len),
                           ("dim", self.dim), ("cloud-batch", self.cloud_batch), ("k", self.k),
                           ("feature-days", self.feature_days), ("match-days", self.match_days),
                           ("batch", self.batch), ("max-batches", self.max_batches),
                           ("clf-dim", self.clf_dim), ("local-cap", self.local_cap),
                           ("outside-cap", self.outside_cap), ("trigger", self.trigger),
                           ("device-batch", self.device_batch), ("ctr-k", self.ctr_k),
                           ("max-age", self.max_age)):
            if value < 1:
                raise ConfigError(f"{PREFIX}{key} must be >= 1, got {value}")
        for key, value in (("first-day", self.first_day), ("exposures", self.exposures),
                           ("cloud-epochs", self.cloud_epochs), ("clf-epochs", self.clf_epochs),
                           ("valid-age", self.valid_age)):
            if value < 0:
                raise ConfigError(f"{PREFIX}{key} must be >= 0, got {value}")
        if self.exposures < 1:
            raise ConfigError(f"{PREFIX}exposures must be >= 1: a CTR sample set needs "
                              "non-clicks (label 0)")
        if self.batch_max < self.batch:
            raise ConfigError(f"{PREFIX}batch-max = {self.batch_max} < {PREFIX}batch = "
                              f"{self.batch}; a batch may grow up to batch-max, not shrink")
        if not 0.0 <= self.sigma <= 1.0:
            raise ConfigError(f"{PREFIX}sigma must be in [0, 1], got {self.sigma}")
        if self.valid_age >= self.max_age:
            raise ConfigError(f"{PREFIX}valid-age = {self.valid_age} must be below "
                              f"{PREFIX}max-age = {self.max_age} (t < t': samples aged "
                              "(t, t'] train)")
        if self.cloud_lr <= 0 or self.clf_lr <= 0:
            raise ConfigError(f"{PREFIX}cloud-lr and {PREFIX}clf-lr must be > 0")
        int_list(self.attention, f"{PREFIX}attention")
        int_list(self.hidden, f"{PREFIX}hidden")
        int_list(self.clf_hidden, f"{PREFIX}clf-hidden")

    @property
    def attention_widths(self) -> tuple[int, ...]:
        return int_list(self.attention, f"{PREFIX}attention")

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        return int_list(self.hidden, f"{PREFIX}hidden")

    @property
    def clf_widths(self) -> tuple[int, ...]:
        return int_list(self.clf_hidden, f"{PREFIX}clf-hidden")

    @property
    def period_s(self) -> int:
        return self.period_days * DAY_SECONDS

    @property
    def matches(self) -> bool:
        """Does the cloud match samples for the devices (the CoDA arm)."""
        return self.arm == "coda"

    @property
    def trains(self) -> bool:
        return self.arm != "cloud"

    def view(self, data: DataConfig) -> SampleViewConfig:
        """Every event is a sample source: one click plus ``exposures`` popularity-drawn
        exposures; no evaluation candidates (the next day's samples are the test). The cloud
        reads every part's logs, but only up to the day before the current one
        (``fedrec.coda.data.pool_until``): the logs are reported at the end of each day."""
        return SampleViewConfig.from_data(
            data, history_len=self.history_len, negatives=0, exposures=self.exposures,
            exposure_sampler="popularity", eval_protocol="full",
            windows=Windows(test_last=0, valid_last=0, device_frac=0.0),
            cloud_parts=("pre", "device", "valid", "test"))
