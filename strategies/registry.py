"""Explicit name -> strategy class registry, plus ``module:Class`` plug-ins.

A plug-in name imports its module, which runs that module's code (like any Python import):
a run config that names a plug-in runs code, so run only configs you trust.
"""

from __future__ import annotations

import importlib

from fedrec.errors import ConfigError
from strategies.base import DeviceStrategy
from strategies.c3drec_pull import C3DRecPull
from strategies.c3drec_push import C3DRecPush
from strategies.coda import CoDA
from strategies.dccl import DCCL
from strategies.fedavg import FedAvg
from strategies.fedmf import FedMF
from strategies.fedncf import FedNCF
from strategies.mcsf import MCSF
from strategies.pfedrec import PFedRec
from strategies.shared_model import SharedModelStrategy

STRATEGIES: dict[str, type[DeviceStrategy]] = {
    "c3drec-pull": C3DRecPull,
    "c3drec-push": C3DRecPush,
    "coda": CoDA,
    "dccl": DCCL,
    "fedavg": FedAvg,
    "fedmf": FedMF,
    "fedncf": FedNCF,
    "mcsf": MCSF,
    "pfedrec": PFedRec,
}

#: the registered protocols' option prefixes (``c3drec-``, ...): a strategy reads only its own
OPTION_PREFIXES: tuple[str, ...] = tuple(sorted({c.prefix for c in STRATEGIES.values() if c.prefix}))


def shared_model_names() -> list[str]:
    """Registered strategies whose cloud holds one model updated from device deltas (the
    ones attacks and defences apply to)."""
    return sorted(n for n, c in STRATEGIES.items() if issubclass(c, SharedModelStrategy))


def resolve_strategy(name: str) -> type[DeviceStrategy]:
    """A registered name (``fedmf``) or an importable ``package.module:ClassName``."""
    if name in STRATEGIES:
        return STRATEGIES[name]
    if ":" not in name:
        raise ConfigError(f"unknown strategy {name!r}; use one of {', '.join(sorted(STRATEGIES))} "
                          "or 'package.module:ClassName' for your own")
    module_name, _, attr = name.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"strategy {name!r} cannot be imported ({exc}); check the module is "
                          "on PYTHONPATH and the class name is spelled right") from None
    if not (isinstance(cls, type) and issubclass(cls, DeviceStrategy)):
        raise ConfigError(f"strategy {name!r} is not a subclass of strategies.base.DeviceStrategy")
    return cls
