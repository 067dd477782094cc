"""DCCL options: run-config keys ``dccl-<field>`` (defaults in pyproject.toml), one frozen
dataclass parsed once (docs/dccl.md lists each choice and why)."""

from __future__ import annotations

from dataclasses import dataclass

from fedrec.config import DataConfig
from fedrec.errors import ConfigError
from fedrec.views.config import SampleViewConfig, Windows

PREFIX = "dccl-"
THETA_INIT = ("encoder", "warm", "zeros")
ITEM_ROWS = ("all", "needed")


def int_list(text: str, key: str) -> tuple[int, ...]:
    """``"32,16,32"`` -> (32, 16, 32); a one-line error names the key otherwise."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ConfigError(f"{key} = {text!r}: give positive integers separated by commas, "
                          "e.g. 32,16,32")
    return values


@dataclass(frozen=True)
class DCCLConfig:
    """DCCL options.

    Data: ``history_len`` (behaviour items per sample), ``negatives`` (training negatives per
    click, resampled each epoch), ``min_item_interactions`` (item k-core; the user k-core is
    ``min-user-interactions``); the split is the paper's: last event test, the one before it
    validation, the rest cut in time per user into a pre-training half and a DCCL half, which
    is cut into ``num-rounds`` equal intervals (one per round).
    Model f (PatchedDIN): ``item_dim``, ``side_dim``, ``profile_dim``, ``attention``,
    ``hidden`` (the three junction widths), ``meta_dim`` (K), ``junctions`` (patched ones).
    Cloud: ``pretrain_epochs`` of f on the pre-training half, ``basis_epochs`` of Eq. 7 with
    theta = 0, then per round ``distill_epochs`` of Eq. 5 and of Eq. 7 (``beta`` weights the
    KL), Adam ``cloud_lr``, batch ``cloud_batch``.
    Device: Adam ``device_lr`` on the metapatch only, batch ``device_batch``, epochs
    ``local-epochs``; ``theta_init``: each round starts from U(theta, u) sent by the cloud
    (``encoder``), from the device's own last theta (``warm``) or from zeros.
    ``full_ranking``: also rank every item at evaluation (slower).
    ``item_rows``: the item-embedding rows a device downloads: ``all`` (the whole table, in
    the broadcast) or ``needed`` (only the rows of the items it reads in the phase, sent to
    it alone; the same results, fewer bytes down).
    """

    history_len: int = 50
    negatives: int = 1
    min_item_interactions: int = 0
    item_dim: int = 8
    side_dim: int = 8
    profile_dim: int = 4
    attention: str = "32,16"
    hidden: str = "32,16,32"
    meta_dim: int = 32
    junctions: str = "1,2,3"
    beta: float = 0.01
    pretrain_epochs: int = 3
    basis_epochs: int = 1
    distill_epochs: int = 1
    cloud_lr: float = 1e-3
    cloud_batch: int = 256
    device_lr: float = 1e-3
    device_batch: int = 32
    theta_init: str = "encoder"
    full_ranking: bool = True
    item_rows: str = "all"

    def __post_init__(self) -> None:
        for key, value in (("history-len", self.history_len), ("item-dim", self.item_dim),
                           ("side-dim", self.side_dim), ("profile-dim", self.profile_dim),
                           ("meta-dim", self.meta_dim), ("cloud-batch", self.cloud_batch),
                           ("device-batch", self.device_batch)):
            if value < 1:
                raise ConfigError(f"{PREFIX}{key} must be >= 1, got {value}")
        for key, value in (("negatives", self.negatives), ("pretrain-epochs", self.pretrain_epochs),
                           ("basis-epochs", self.basis_epochs),
                           ("distill-epochs", self.distill_epochs),
                           ("min-item-interactions", self.min_item_interactions)):
            if value < 0:
                raise ConfigError(f"{PREFIX}{key} must be >= 0, got {value}")
        if self.negatives < 1:
            raise ConfigError(f"{PREFIX}negatives must be >= 1 (CTR training needs label-0 rows)")
        if self.beta < 0 or self.cloud_lr <= 0 or self.device_lr <= 0:
            raise ConfigError(f"{PREFIX}beta must be >= 0 and {PREFIX}cloud-lr, "
                              f"{PREFIX}device-lr > 0")
        if self.theta_init not in THETA_INIT:
            raise ConfigError(f"{PREFIX}theta-init = {self.theta_init!r}; use one of "
                              f"{', '.join(THETA_INIT)}")
        if self.item_rows not in ITEM_ROWS:
            raise ConfigError(f"{PREFIX}item-rows = {self.item_rows!r}; use one of "
                              f"{', '.join(ITEM_ROWS)}")
        if self.item_rows == "needed" and self.full_ranking:
            raise ConfigError(f"{PREFIX}item-rows = needed sends a device only the item rows it "
                              f"scores, but {PREFIX}full-ranking = true ranks every item; set "
                              f"{PREFIX}full-ranking = false (or {PREFIX}item-rows = all)")
        widths = int_list(self.hidden, f"{PREFIX}hidden")
        int_list(self.attention, f"{PREFIX}attention")
        on = int_list(self.junctions, f"{PREFIX}junctions")
        if max(on) > len(widths):
            raise ConfigError(f"{PREFIX}junctions = {self.junctions!r} names a junction beyond "
                              f"the {len(widths)} of {PREFIX}hidden = {self.hidden!r}")

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        return int_list(self.hidden, f"{PREFIX}hidden")

    @property
    def attention_widths(self) -> tuple[int, ...]:
        return int_list(self.attention, f"{PREFIX}attention")

    @property
    def patched(self) -> tuple[bool, ...]:
        """Per junction: does it carry a patch."""
        on = set(int_list(self.junctions, f"{PREFIX}junctions"))
        return tuple(j + 1 in on for j in range(len(self.hidden_widths)))

    def view(self, data: DataConfig) -> SampleViewConfig:
        """The paper's split as a sample view: test = last event, valid = the one before,
        the rest halved in time per user into pre-training (cloud) and DCCL parts; the cloud
        reads both parts' logs and the profiles (it has the logs, Sec. 3)."""
        return SampleViewConfig.from_data(
            data, history_len=self.history_len, negatives=self.negatives,
            windows=Windows(test_last=1, valid_last=1, device_frac=0.5),
            cloud_parts=("pre", "device"), cloud_profiles=True,
            min_item_interactions=self.min_item_interactions)
