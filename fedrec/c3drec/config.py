"""C3DRec options: run-config keys ``c3drec-<field>`` (defaults in pyproject.toml), one frozen
dataclass, and the derived specs the pure functions take."""

from __future__ import annotations

from dataclasses import dataclass

from fedrec.c3drec.agp import AGPSchedule
from fedrec.c3drec.sparsify import KINDS
from fedrec.c3drec.timeline import TimelineConfig
from fedrec.c3drec.train import GammaPlan, SparseSpec, TrainSpec
from fedrec.errors import ConfigError

PREFIX = "c3drec-"
PRUNE = ("all", "gru")
#: what a device fine-tunes: the user side (input item table + GRU) ...
DEVICE_TRAINABLE = ("item_emb.", "gru.")
#: ... and, with ``device_items``, the output rows (item embeddings) of its own clicked items
ITEM_TABLE = "out.weight"


@dataclass(frozen=True)
class C3DRecConfig:
    """C3DRec options (paper defaults where it gives them; see docs/c3drec.md).

    Timeline: ``t_device``/``t_test`` (unix s; positional data: ``device_frac``/``test_frac``),
    ``session_gap`` (706 s), ``min_session_len``, ``min_user_clicks``, ``new_user_quantile``.
    Item-CF: ``cf_source``, ``candidate_proportion`` (10%) or ``candidate_threshold`` (p >
    threshold when >= 0), ``cf_knn`` (0 = every neighbour).
    Model: ``embedding_dim``, ``hidden_dim`` (100), ``max_len`` (history/piece length).
    Cloud training: ``global_epochs``, ``global_batch`` (targets per step), ``global_lr``
    (Adagrad), ``global_negatives`` (0 = softmax over all items, else shared samples);
    AGP to ``model_sparsity`` (0 = off) on the grid ``agp_start + k * agp_every`` (epochs),
    k = 0..``agp_steps``, of every weight matrix (``prune = "all"``: item tables and GRU) or
    of the GRU only (``"gru"``).
    Embedding sparsity (Eq. 3): ``emb_sparsity`` target reached by calibrating gamma on the
    AGP grid (0 = use the fixed ``gamma``), L1 weight ``lasso``.
    Device: ``device_batch`` (update interval in clicks, paper 50), ``device_lr``; epochs
    per round = run-config ``local-epochs``; ``device_items``: also fine-tune the item
    embeddings of the device's own clicked items (private; pull ranks with them).
    ``topk`` (20), model ``encoding``.
    """

    t_device: int = 1512057600
    t_test: int = 1512230400
    device_frac: float = 0.2
    test_frac: float = 0.1
    session_gap: float = 706.0
    min_session_len: int = 2
    min_user_clicks: int = 12
    new_user_quantile: float = 0.9
    cf_source: str = "transactional"
    candidate_proportion: float = 0.1
    candidate_threshold: float = -1.0
    cf_knn: int = 0
    embedding_dim: int = 64
    hidden_dim: int = 100
    max_len: int = 20
    global_epochs: int = 5
    global_batch: int = 50
    global_lr: float = 0.05
    global_negatives: int = 0
    model_sparsity: float = 0.9
    prune: str = "all"
    agp_start: float = 0.0
    agp_steps: int = 8
    agp_every: float = 0.5
    emb_sparsity: float = 0.9
    gamma: float = 0.0
    lasso: float = 1e-3
    device_batch: int = 50
    device_lr: float = 0.01
    device_items: bool = True
    topk: int = 20
    encoding: str = "auto"

    def __post_init__(self) -> None:
        if self.prune not in PRUNE:
            raise ConfigError(f"c3drec-prune = {self.prune!r}; use one of {PRUNE}")
        if self.encoding not in (*KINDS, "auto"):
            raise ConfigError(f"c3drec-encoding = {self.encoding!r}; use auto or one of {KINDS}")
        for name in ("global_epochs", "global_batch", "device_batch", "topk", "max_len",
                     "embedding_dim", "hidden_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"c3drec-{name.replace('_', '-')} must be >= 1")
        if self.gamma < 0 or self.lasso < 0:
            raise ConfigError("c3drec-gamma and c3drec-lasso must be >= 0")
        end = self.agp().end  # also validates the sparsity targets and the grid
        if (self.model_sparsity > 0 or self.emb_sparsity > 0) and end >= self.global_epochs:
            raise ConfigError(
                f"the AGP grid ends at epoch {end:g} but cloud training stops after "
                f"{self.global_epochs}: the last pruning would get no training after it; set "
                "c3drec-agp-start + c3drec-agp-steps * c3drec-agp-every below "
                "c3drec-global-epochs")

    def timeline(self, seed: int, max_devices: int) -> TimelineConfig:
        return TimelineConfig(self.t_device, self.t_test, self.device_frac, self.test_frac,
                              self.session_gap, self.min_session_len, self.min_user_clicks,
                              self.new_user_quantile, self.cf_source, max_devices, seed)

    def prune_names(self, names: list[str]) -> list[str]:
        """The prunable weight matrices AGP acts on (``prune``)."""
        return names if self.prune == "all" else [n for n in names if n.startswith("gru.")]

    def agp(self) -> AGPSchedule:
        return AGPSchedule(self.model_sparsity, 0.0, self.agp_start, self.agp_steps, self.agp_every)

    def gamma_plan(self) -> GammaPlan | None:
        if self.emb_sparsity <= 0:
            return None
        return GammaPlan(AGPSchedule(self.emb_sparsity, 0.0, self.agp_start, self.agp_steps,
                                     self.agp_every))

    def global_spec(self) -> TrainSpec:
        return TrainSpec(self.global_epochs, self.global_batch, self.global_lr, self.max_len,
                         negatives=self.global_negatives)

    def device_trainable(self) -> tuple[str, ...]:
        return DEVICE_TRAINABLE + ((ITEM_TABLE,) if self.device_items else ())

    def device_spec(self, epochs: int) -> TrainSpec:
        return TrainSpec(epochs, self.device_batch, self.device_lr, self.max_len,
                         self.device_trainable(),
                         own_rows=(ITEM_TABLE,) if self.device_items else ())

    def sparse(self, mode: str, gamma: float | None = None) -> SparseSpec:
        return SparseSpec(mode, self.gamma if gamma is None else gamma, self.lasso)
