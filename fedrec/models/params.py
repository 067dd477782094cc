"""Copy named model parameters to and from numpy arrays (the payload form Flower ships).

Plain functions over ``named_parameters``; no Flower import. ``get_arrays`` copies, so later
local training never mutates arrays already handed to the strategy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from fedrec.errors import ConfigError


def _lookup(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ConfigError(
            f"unknown parameter(s) {missing} for {type(model).__name__}; valid: {list(params)}"
        )
    return {n: params[n] for n in names}


def get_arrays(model: nn.Module, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Copies of the named parameters as numpy arrays, in the order of ``names``.

    Parameters
    ----------
    model : nn.Module
        Any module (a ``RecModel`` in practice).
    names : iterable of str, optional
        Parameter names as in ``named_parameters``; ``None`` means all, in that order.
        Typical: ``model.shared_parameter_names()``.

    Returns
    -------
    dict of str to np.ndarray
        Independent copies (same dtype and shape as the parameters).
    """
    selected = dict(model.named_parameters()) if names is None else _lookup(model, list(names))
    return {n: p.detach().cpu().numpy().copy() for n, p in selected.items()}


def set_arrays(model: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy ``arrays`` into the parameters of the same names, in place (no autograd record).

    Raises ConfigError naming the parameter when a name is unknown or a shape differs, which
    means the sender built its model with another configuration.
    """
    params = _lookup(model, list(arrays))
    with torch.no_grad():
        for name, value in arrays.items():
            p = params[name]
            if tuple(value.shape) != tuple(p.shape):
                raise ConfigError(
                    f"parameter {name!r} has shape {tuple(p.shape)} but the array has "
                    f"{tuple(value.shape)}; build both models with the same configuration"
                )
            p.copy_(torch.as_tensor(value))
