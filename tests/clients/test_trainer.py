"""Local examples: positives once each, k negatives per positive, never an item of the user."""

from __future__ import annotations

import numpy as np

from clients.trainer import local_examples
from fedrec.federated import DeviceData


def test_negatives_avoid_train_and_held_out_items():
    data = DeviceData(0, np.array([1, 2, 2, 5]), valid_item=3, test_item=4, negatives=None)
    items, labels = local_examples(data, n_items=8, k=50, rng=np.random.default_rng(0))
    pos, neg = items[labels == 1], items[labels == 0]
    assert sorted(pos.tolist()) == [1, 2, 5]
    assert len(neg) == 3 * 50
    assert set(neg.tolist()) == {0, 6, 7}          # 150 draws hit each free item


def test_same_rng_same_examples():
    data = DeviceData(0, np.array([1, 2]), valid_item=-1, test_item=-1, negatives=None)
    a = local_examples(data, 10, 4, np.random.default_rng(7))
    b = local_examples(data, 10, 4, np.random.default_rng(7))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
