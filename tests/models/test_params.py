"""get_arrays / set_arrays: copies, order, round trip, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrec.errors import ConfigError
from fedrec.models.mf import MF
from fedrec.models.params import get_arrays, set_arrays


def _mf(seed: int) -> MF:
    return MF(n_users=2, n_items=3, dim=2, seed=seed)


def test_get_arrays_all_in_parameter_order() -> None:
    arrays = get_arrays(_mf(0))
    assert list(arrays) == [n for n, _ in _mf(0).named_parameters()]
    assert set(arrays) == {"user_emb.weight", "item_emb.weight", "item_bias"}
    assert arrays["item_emb.weight"].shape == (3, 2) and arrays["item_bias"].dtype == np.float32


def test_get_arrays_copies() -> None:
    m = _mf(0)
    arrays = get_arrays(m, m.shared_parameter_names())
    assert list(arrays) == ["item_bias", "item_emb.weight"]  # named_parameters order
    before = arrays["item_emb.weight"].copy()
    with torch.no_grad():
        m.item_emb.weight.add_(1.0)
    assert np.array_equal(arrays["item_emb.weight"], before)


def test_round_trip_moves_only_named_parameters() -> None:
    a, b = _mf(0), _mf(1)
    set_arrays(b, get_arrays(a, a.shared_parameter_names()))
    assert torch.equal(b.item_emb.weight, a.item_emb.weight)
    assert torch.equal(b.item_bias, a.item_bias)
    assert not torch.equal(b.user_emb.weight, a.user_emb.weight)
    assert b.item_emb.weight.requires_grad  # still trainable


def test_set_arrays_does_not_alias_the_array() -> None:
    m = _mf(0)
    value = np.ones((3, 2), dtype=np.float32)
    set_arrays(m, {"item_emb.weight": value})
    value[0, 0] = 5.0
    assert m.item_emb.weight[0, 0].item() == 1.0


def test_errors_name_the_parameter() -> None:
    m = _mf(0)
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['w'\] for MF; valid: \["):
        get_arrays(m, ["w"])
    with pytest.raises(ConfigError, match=r"'item_bias' has shape \(3,\) but the array has \(4,\)"):
        set_arrays(m, {"item_bias": np.zeros(4, dtype=np.float32)})
