"""MC-SF options: run-config keys ``mcsf-<field>`` (defaults in pyproject.toml), one frozen
dataclass parsed once (docs/mcsf.md lists each choice and why)."""

from __future__ import annotations

from dataclasses import dataclass

from fedrec.config import DataConfig
from fedrec.dccl.config import int_list
from fedrec.errors import ConfigError
from fedrec.views.config import SampleViewConfig, Windows

PREFIX = "mcsf-"
REWEIGHT = ("scalar", "vector", "none")
FAST_TRAIN = ("fedavg", "local")
SAMPLERS = ("uniform", "popularity")
#: the paper's split: last 5 events test, the 5 before them the fast training phase
TEST_LAST, FAST_LAST = 5, 5


@dataclass(frozen=True)
class MCSFConfig:
    """MC-SF options (Chen, Yao et al.; ``../shared/docs/protocols/mcsf.md``).

    Data: users and items with at least ``min_interactions`` events; per user the last 5
    events are the test, the 5 before them the fast phase, the rest the slow phase. Each event
    has ``exposures`` simulated impressions (shown, not clicked; drawn by ``exposure_sampler``)
    and ``negatives`` sampled negatives; a training row set is the click, its negatives and
    its first ``exposure_negatives`` exposures (label 0).
    Slow (cloud): DIN over the last ``slow_len`` clicks of the cloud's sequence, ``dim``-wide
    item embeddings, ``attention`` widths, ``hidden`` widths of the output MLP; ``f2s``: the
    uploaded negative memory enters through one GRU_n step on the candidate, re-weighted by
    ``reweight`` (Eq. 5-6). ``slow_epochs`` of Adam per round over the slow phase (the first
    round: ``slow_pretrain_epochs``), ``slow_targets`` = the last that many slow-phase events
    per user are training targets (0: all).
    Fast (device): GRU_p over the last ``fast_len`` clicks, GRU_n over the last ``fast_len``
    exposures, hidden ``dim``; ``s2f``: the cloud's r_c, r_e per candidate initialise both
    states and r_c joins the MLP (Eqs. 7-8). ``fast_train``: ``fedavg`` (the shared fast
    weights averaged over the round's devices, weighted by rows) or ``local`` (each device
    keeps its own copy, nothing uploaded). Devices upload the negative memory every
    ``upload_every`` events (F2S).
    Optimiser: Adam ``lr`` (the paper's 5e-4; the device uses the run's ``lr``), batch
    ``batch`` events, L2 weight ``l2`` (Adam weight decay).
    """

    min_interactions: int = 20
    exposures: int = 5
    exposure_sampler: str = "popularity"
    negatives: int = 1
    exposure_negatives: int = 1
    dim: int = 32
    slow_len: int = 50
    fast_len: int = 10
    attention: str = "36"
    hidden: str = "64,32"
    f2s: bool = True
    s2f: bool = True
    reweight: str = "scalar"
    slow_pretrain_epochs: int = 5
    slow_epochs: int = 1
    slow_targets: int = 0
    lr: float = 5e-4
    batch: int = 256
    l2: float = 1e-4
    fast_train: str = "fedavg"
    device_batch: int = 16
    upload_every: int = 5

    def __post_init__(self) -> None:
        for key, value in (("dim", self.dim), ("slow-len", self.slow_len),
                           ("fast-len", self.fast_len), ("batch", self.batch),
                           ("device-batch", self.device_batch),
                           ("upload-every", self.upload_every)):
            if value < 1:
                raise ConfigError(f"{PREFIX}{key} must be >= 1, got {value}")
        for key, value in (("min-interactions", self.min_interactions),
                           ("exposures", self.exposures), ("negatives", self.negatives),
                           ("exposure-negatives", self.exposure_negatives),
                           ("slow-pretrain-epochs", self.slow_pretrain_epochs),
                           ("slow-epochs", self.slow_epochs), ("slow-targets", self.slow_targets)):
            if value < 0:
                raise ConfigError(f"{PREFIX}{key} must be >= 0, got {value}")
        if self.exposure_negatives > self.exposures:
            raise ConfigError(f"{PREFIX}exposure-negatives = {self.exposure_negatives} uses more "
                              f"exposures than the {self.exposures} of {PREFIX}exposures; lower "
                              "it or raise the exposures")
        if self.negatives + self.exposure_negatives < 1:
            raise ConfigError(f"{PREFIX}negatives + {PREFIX}exposure-negatives must be >= 1 "
                              "(BCE needs label-0 rows)")
        if self.exposures < 1:
            raise ConfigError(f"{PREFIX}exposures must be >= 1: the fast model's GRU_n and the "
                              "negative memory read the exposures")
        if self.lr <= 0 or self.l2 < 0:
            raise ConfigError(f"{PREFIX}lr must be > 0 and {PREFIX}l2 >= 0, got {self.lr}, "
                              f"{self.l2}")
        choices: tuple[tuple[str, str, tuple[str, ...]], ...] = (
            ("reweight", self.reweight, REWEIGHT), ("fast-train", self.fast_train, FAST_TRAIN),
            ("exposure-sampler", self.exposure_sampler, SAMPLERS))
        for name, choice, allowed in choices:
            if choice not in allowed:
                raise ConfigError(f"{PREFIX}{name} = {choice!r}; use one of {', '.join(allowed)}")
        int_list(self.attention, f"{PREFIX}attention")
        int_list(self.hidden, f"{PREFIX}hidden")

    @property
    def attention_widths(self) -> tuple[int, ...]:
        return int_list(self.attention, f"{PREFIX}attention")

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        return int_list(self.hidden, f"{PREFIX}hidden")

    @property
    def candidates(self) -> int:
        """Candidates of a training event: the click, its negatives, its exposure negatives."""
        return 1 + self.negatives + self.exposure_negatives

    def view(self, data: DataConfig) -> SampleViewConfig:
        """The paper's split as a sample view: 20-core users and items, last 5 events test,
        the 5 before them the fast (device) part, the rest the slow (pre) part, no
        validation; the cloud reads the slow part's clicks only."""
        return SampleViewConfig.from_data(
            data, history_len=max(self.slow_len, self.fast_len), negatives=self.negatives,
            exposures=self.exposures, exposure_sampler=self.exposure_sampler,
            windows=Windows(test_last=TEST_LAST, valid_last=0, device_last=FAST_LAST),
            cloud_parts=("pre",), min_item_interactions=self.min_interactions,
            min_user_interactions=max(data.min_user_interactions, self.min_interactions))
