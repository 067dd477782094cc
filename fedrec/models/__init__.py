"""Recommendation models behind one contract (``fedrec.models.base.RecModel``).

``MODELS`` is the explicit registry; ``build_model`` is the one way configs create a model.
"""

from __future__ import annotations

from typing import Any

from fedrec.errors import ConfigError
from fedrec.models.base import PAD, Batch, RecModel
from fedrec.models.din import DIN
from fedrec.models.gru4rec import GRU4Rec
from fedrec.models.mf import MF
from fedrec.models.ncf import NeuMF
from fedrec.models.pfedrec import PFedRecModel
from fedrec.models.sasrec import SASRec

MODELS: dict[str, type[RecModel]] = {
    "mf": MF,
    "ncf": NeuMF,
    "pfedrec": PFedRecModel,
    "gru4rec": GRU4Rec,
    "din": DIN,
    "sasrec": SASRec,
}


def build_model(name: str, *, n_users: int, n_items: int, **kwargs: Any) -> RecModel:
    """Build the registered model ``name`` with its keyword arguments.

    Parameters
    ----------
    name : str
        A key of ``MODELS``.
    n_users, n_items : int
        Table sizes; models without a user table ignore ``n_users``.
    **kwargs
        The model's own keyword arguments (see its class docstring).

    Raises
    ------
    ConfigError
        Unknown name, or an argument the model does not take.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid names: {sorted(MODELS)}")
    cls = MODELS[name]
    try:
        return cls(n_users=n_users, n_items=n_items, **kwargs)
    except TypeError as e:  # an unexpected keyword: report it as a config problem
        raise ConfigError(f"model {name!r}: {e}; see {cls.__name__}'s docstring") from None


__all__ = [
    "DIN",
    "MF",
    "MODELS",
    "PAD",
    "Batch",
    "GRU4Rec",
    "NeuMF",
    "PFedRecModel",
    "RecModel",
    "build_model",
]
