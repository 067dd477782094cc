"""C3DRec options: validation and derived specs (defaults vs pyproject: tests/test_defaults.py)."""

from __future__ import annotations

import pytest

from fedrec.c3drec.config import DEVICE_TRAINABLE, ITEM_TABLE, C3DRecConfig
from fedrec.errors import ConfigError


def test_agp_grid_must_end_before_cloud_training_does() -> None:
    with pytest.raises(ConfigError, match="grid ends at epoch 4"):
        C3DRecConfig(global_epochs=3)
    C3DRecConfig(global_epochs=3, agp_every=0.25)
    C3DRecConfig(global_epochs=1, model_sparsity=0.0, emb_sparsity=0.0)   # nothing scheduled


def test_bad_values_are_config_errors() -> None:
    for kw in ({"prune": "items"}, {"encoding": "zip"}, {"device_batch": 0}, {"lasso": -1.0},
               {"model_sparsity": 1.0}):
        with pytest.raises(ConfigError):
            C3DRecConfig(**kw)


def test_prune_selects_the_weight_matrices() -> None:
    names = ["item_emb.weight", "gru.weight_ih_l0", "gru.weight_hh_l0", "out.weight"]
    assert C3DRecConfig().prune_names(names) == names
    assert C3DRecConfig(prune="gru").prune_names(names) == ["gru.weight_ih_l0", "gru.weight_hh_l0"]


def test_derived_specs() -> None:
    c = C3DRecConfig(device_batch=25, device_lr=0.02, max_len=7, emb_sparsity=0.0)
    spec = c.device_spec(epochs=3)
    assert (spec.epochs, spec.batch_events, spec.lr, spec.max_len) == (3, 25, 0.02, 7)
    assert spec.trainable == (*DEVICE_TRAINABLE, ITEM_TABLE) and spec.own_rows == (ITEM_TABLE,)
    assert c.gamma_plan() is None
    frozen = C3DRecConfig(device_items=False).device_spec(1)
    assert frozen.trainable == DEVICE_TRAINABLE and frozen.own_rows == ()
    assert c.timeline(seed=4, max_devices=9).max_devices == 9
    assert c.sparse("push", 0.3).gamma == 0.3 and c.sparse("pull").gamma == c.gamma
