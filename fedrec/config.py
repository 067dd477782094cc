"""The flat Flower run-config, parsed once at the edge into frozen dataclasses.

Flower passes ``context.run_config`` as a flat ``{"kebab-key": scalar}`` dict whose
defaults live in ``pyproject.toml`` (``[tool.flwr.app.config]``). ``parse_run_config``
turns it into a ``RunConfig``; each component then receives only its own section.
Field ``local_epochs`` is read from key ``local-epochs``. A protocol's own options are a
section of their own: a frozen dataclass read from keys with the protocol's prefix
(``pfedrec-lr-eta``), parsed once with the rest (``parse_run_config(..., options, prefix)``;
the strategy class names both) into ``RunConfig.protocol``, which both halves of the
protocol read (``protocol_options``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints

from fedrec.devices import parse_tier_mix
from fedrec.errors import ConfigError

T = TypeVar("T")
#: seeds feed numpy and torch; torch.manual_seed rejects negatives and values >= 2**63
SEED_LIMIT = 2**32


def _key(name: str, prefix: str = "") -> str:
    return f"{prefix}{name.replace('_', '-')}"


def _coerce(value: Any, kind: type, key: str) -> Any:
    """Convert a TOML/CLI scalar to the field's type, with a one-line error."""
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return value.lower() in ("true", "1")
            return bool(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"run-config '{key}' = {value!r} is not a valid {kind.__name__}; "
            f"pass e.g. --set {key}=<{kind.__name__}>"
        ) from None


def parse_section(cls: type[T], run_config: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from the keys of ``run_config`` (missing keys keep defaults)."""
    hints = get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = _key(f.name, prefix)
        if key in run_config:
            kind = hints[f.name]
            if isinstance(kind, types.UnionType):  # e.g. "int | None": take the first
                kind = kind.__args__[0]
            kwargs[f.name] = _coerce(run_config[key], kind, key)
    return cls(**kwargs)


def section_keys(cls: type, prefix: str = "") -> set[str]:
    return {_key(f.name, prefix) for f in dataclasses.fields(cls)}


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _check_seed(seed: int) -> None:
    _check(0 <= seed < SEED_LIMIT,
           f"seed = {seed} is out of range; pass --set seed=<an int from 0 to {SEED_LIMIT - 1}>")


def _check_device_mix(mix: str) -> None:
    """Parse ``device-mix`` here too (the clients parse it again): a bad tier or weight is a
    config error before anything starts, not a failure on every Flower client."""
    try:
        parse_tier_mix(mix)
    except ConfigError as exc:
        raise ConfigError(f"device-mix: {exc}") from None


@dataclass(frozen=True)
class DataConfig:
    """Which data, how it is split, how it is evaluated."""

    dataset: str = "synthetic"
    data_root: str = ""          # "" = $FEDREC_DATA or ../shared/data
    synthetic_size: str = "small"
    synthetic_users: int = 0      # 0 = the size's own user count; else that many users (devices)
    max_devices: int = 0          # 0 = every user; else the first N users (by device id)
    min_user_interactions: int = 5
    eval_protocol: str = "sampled"   # "sampled" (N negatives) or "full" (all items)
    eval_negatives: int = 99
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.dataset.strip() != "", "dataset is empty; pass --set dataset=<a preset such as "
               "synthetic or ml-1m, or a data file or folder>")
        _check_seed(self.seed)
        _check(self.eval_protocol in ("sampled", "full"),
               f"eval-protocol = {self.eval_protocol!r}; use 'sampled' or 'full'")
        _check(self.eval_negatives >= 1, "eval-negatives must be >= 1")
        _check(self.max_devices >= 0, "max-devices must be >= 0 (0 = all users)")
        _check(self.synthetic_users >= 0, "synthetic-users must be >= 0 (0 = the size's own)")
        _check(self.min_user_interactions >= 3,
               "min-user-interactions must be >= 3 (leave-one-out needs train, valid and test)")


@dataclass(frozen=True)
class TrainConfig:
    """Federated training schedule and on-device optimisation."""

    num_rounds: int = 20
    fraction_fit: float = 1.0      # fraction of devices sampled per round
    local_epochs: int = 1
    lr: float = 0.0                # on-device SGD learning rate; 0 = the strategy's default_lr
    server_lr: float = 1.0         # step applied to the aggregated delta
    batch_size: int = 256
    num_negatives: int = 4         # negatives per positive in local training
    embedding_dim: int = 32
    model: str = ""                # "" = the strategy's default model
    seed: int = 0

    def __post_init__(self) -> None:
        _check_seed(self.seed)
        _check(self.num_rounds >= 1, "num-rounds must be >= 1")
        _check(0.0 < self.fraction_fit <= 1.0, "fraction-fit must be in (0, 1]")
        _check(self.local_epochs >= 1, "local-epochs must be >= 1")
        _check(self.lr >= 0 and self.server_lr > 0,
               "lr must be >= 0 (0 = the strategy's default) and server-lr > 0")
        _check(self.batch_size >= 1, "batch-size must be >= 1")
        _check(self.num_negatives >= 1, "num-negatives must be >= 1")
        _check(self.embedding_dim >= 1, "embedding-dim must be >= 1")


@dataclass(frozen=True)
class SimConfig:
    """How devices map onto Flower clients, and their hardware."""

    devices_per_client: int = 64
    flower_clients: int = 0          # Flower clients the cloud waits for; 0 = ceil(devices /
                                     # devices-per-client) (experiments.run sets --num-supernodes)
    device_mix: str = "pixel2:0.5,iphone8plus:0.3,highend:0.2"
    simulate_dropouts: bool = True   # devices drop out by their profile's availability
    keep_device_state: bool = False  # hosts keep their devices' private state after the run
    eval_every: int = 1
    eval_fraction: float = 1.0
    round_timeout_s: float = 0.0   # 0 = no timeout
    host_reduce: bool = True       # a cohort sends its devices' summed uploads when the
                                   # strategy's rule needs only sums (see fedrec.reduce)
    fault_unavailable: float = 0.0  # injected: share of devices unavailable each round
    fault_crash: float = 0.0        # injected: share of devices that crash after training
    deadline_s: float = 0.0         # simulated seconds a device may take (compute + transfer);
                                    # slower ones are stragglers, their upload is dropped; 0 = none

    def __post_init__(self) -> None:
        _check(self.devices_per_client >= 1, "devices-per-client must be >= 1")
        _check(self.flower_clients >= 0, "flower-clients must be >= 0 (0 = one per shard)")
        _check(self.eval_every >= 0, "eval-every must be >= 0 (0 = only after the last round)")
        _check(0.0 < self.eval_fraction <= 1.0, "eval-fraction must be in (0, 1]")
        _check(self.round_timeout_s >= 0, "round-timeout-s must be >= 0 seconds (0 = no timeout)")
        _check_device_mix(self.device_mix)
        _check(0.0 <= self.fault_unavailable < 1.0 and 0.0 <= self.fault_crash < 1.0,
               "fault-unavailable and fault-crash are shares of devices: use values in [0, 1)")
        _check(self.deadline_s >= 0, "deadline-s must be >= 0 simulated seconds (0 = no deadline)")


@dataclass(frozen=True)
class OutputConfig:
    output_dir: str = "runs"
    run_name: str = ""             # "" = <strategy>-<dataset>-<UTC time>
    quiet: bool = False
    resume: bool = False           # continue <run dir>/checkpoint.pkl (set by --resume)

    def __post_init__(self) -> None:
        _check(not any(c in self.run_name for c in "/\\") and self.run_name not in (".", ".."),
               f"run-name = {self.run_name!r} must be a folder name inside output-dir (no '/', "
               "'\\' or '..'); pass e.g. --set run-name=my-run, or --set output-dir=<folder>")


@dataclass(frozen=True)
class RunConfig:
    strategy: str = "fedmf"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    raw: tuple[tuple[str, Any], ...] = ()   # the flat dict as given, for the run record
    #: the protocol's own options section (a frozen dataclass), None when it has none
    protocol: Any = None

    def raw_dict(self) -> dict[str, Any]:
        return dict(self.raw)


SECTIONS: tuple[type, ...] = (DataConfig, TrainConfig, SimConfig, OutputConfig)


def parse_run_config(run_config: Mapping[str, Any], extra_keys: AbstractSet[str] = frozenset(),
                     options: type | None = None, prefix: str = "") -> RunConfig:
    """Parse and validate the flat run-config. Unknown keys are a ConfigError.

    ``seed`` is shared by the data and train sections. ``extra_keys`` are keys that other
    sections read (e.g. ``attack``, or a family ``pfedrec-*``). ``options`` is the protocol's
    options dataclass, read from the keys ``<prefix><field>`` into ``RunConfig.protocol``
    (the strategy class's ``options`` and ``prefix``).
    """
    known = {"strategy"} | set(extra_keys)
    if options is not None:
        known |= section_keys(options, prefix)
    for cls in SECTIONS:
        known |= section_keys(cls)
    unknown = sorted(k for k in run_config if k not in known and not _is_prefixed(k, extra_keys))
    if unknown:
        raise ConfigError(unknown_keys_message(unknown, known))
    return RunConfig(
        strategy=str(run_config.get("strategy", "fedmf")),
        data=parse_section(DataConfig, run_config),
        train=parse_section(TrainConfig, run_config),
        sim=parse_section(SimConfig, run_config),
        output=parse_section(OutputConfig, run_config),
        raw=tuple(sorted(run_config.items())),
        protocol=None if options is None else parse_section(options, run_config, prefix),
    )


def protocol_options(cfg: RunConfig, cls: type[T]) -> T:
    """``cfg.protocol``, which must be a ``cls`` (the protocol's options section)."""
    if not isinstance(cfg.protocol, cls):
        raise ConfigError(f"this protocol reads {cls.__name__} options, but the run config "
                          f"holds {type(cfg.protocol).__name__}; parse it with the strategy's "
                          "options (experiments.setup.resolve, or parse_run_config(..., "
                          "options=, prefix=))")
    return cfg.protocol


def unknown_keys_message(unknown: list[str], known: set[str]) -> str:
    """One line naming the unknown keys and the (at most 3) closest valid keys to each."""
    close = [m for k in unknown for m in difflib.get_close_matches(k, sorted(known), n=3)]
    fix = (f"did you mean {', '.join(dict.fromkeys(close))}? (all keys: README.md, 'Run options')"
           if close else "the valid keys are listed in README.md, 'Run options'")
    return f"unknown run-config key(s) {', '.join(unknown)}; {fix}"


def _is_prefixed(key: str, extra_keys: AbstractSet[str]) -> bool:
    return any(e.endswith("-*") and key.startswith(e[:-1]) for e in extra_keys)
