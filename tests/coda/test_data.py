"""CoDA's samples: the cloud's pool equals what the devices logged, the wire format is
lossless and carries no user id, batches follow the paper's rules."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.coda.config import CoDAConfig
from fedrec.coda.data import (
    Block,
    build_pool,
    decode,
    device_log,
    encode,
    item_categories,
    pack_batches,
    plain_bytes,
    unpack_batches,
)
from fedrec.coda.matching import cut_batches
from fedrec.config import DataConfig
from fedrec.data.synthetic import generate, preset
from fedrec.views.features import ItemSide
from fedrec.views.samples import build_sample_view


@pytest.fixture(scope="module")
def view():
    cfg = CoDAConfig(history_len=6, exposures=3).view(DataConfig(max_devices=40))
    return build_sample_view(generate(preset("small")), cfg)


def test_the_cloud_pool_holds_exactly_the_samples_the_devices_logged(view):
    """Same exposure draws, same histories, same days: the logs reported are the samples."""
    cloud = view.cloud()
    pool = build_pool(cloud.logs, view.n_items, 3, 6, 0, 0, 86_400)
    for d in (0, 7, 39):
        mine = device_log(view.device(d), 0, 86_400)
        rows = np.flatnonzero(pool.owner == d)
        np.testing.assert_array_equal(pool.block.item[rows], mine.block.item)
        np.testing.assert_array_equal(pool.block.label[rows], mine.block.label)
        np.testing.assert_array_equal(pool.block.hist[rows], mine.block.hist)
        np.testing.assert_array_equal(pool.day[rows], mine.day)
    assert pool.block.label.mean() == pytest.approx(1 / 4)              # 1 click, 3 exposures


def test_encoding_is_lossless_small_and_names_no_user(view):
    pool = build_pool(view.cloud().logs, view.n_items, 3, 6, 0, 0, 86_400)
    block = pool.block.take(np.arange(100, 140))
    wire = encode(block)
    back = decode(wire, 6)
    for f in ("item", "label", "hist"):
        np.testing.assert_array_equal(getattr(back, f), getattr(block, f))
    assert len(wire) < plain_bytes(block)                                # compressed
    ints = np.frombuffer(__import__("zlib").decompress(__import__("base64").b64decode(wire)), "<i4")
    real = (block.hist >= 0).sum()
    assert len(ints) == 1 + 3 * len(block) + real                        # no owner field
    data, bounds = pack_batches([wire, encode(block.take(np.arange(3)))])
    assert [decode(b, 6).item.tolist() for b in unpack_batches(data, bounds)] == \
        [block.item.tolist(), block.item[:3].tolist()]


def test_an_empty_block_round_trips():
    empty = Block(np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros((0, 4), np.int32))
    assert len(decode(encode(empty), 4)) == 0


@pytest.mark.parametrize(("n", "sizes"), [
    (0, []), (25, [25]), (60, [25, 35]), (66, [25, 25, 16]), (340, [25] * 12),
    (40, [40]), (41, [25, 16]),
])
def test_batches_of_25_grow_to_40_to_avoid_a_fragment_and_stop_at_12(n, sizes):
    got = cut_batches(np.arange(n), 25, 40, 12)
    assert [len(b) for b in got] == sizes
    if got:
        assert np.concatenate(got).tolist() == list(range(sum(sizes)))


def test_categories_fall_back_to_the_first_genre_then_to_buckets():
    side = ItemSide(np.array([2, -1, 0]), np.zeros((3, 0), np.int32), np.array([0, 1, 2]), ())
    assert item_categories(side).tolist() == [2, 3, 0]                  # unknown: its own code
    side = ItemSide(np.full(3, -1), np.array([[4, 1], [-1, -1], [0, -1]], np.int32),
                    np.zeros(0), tuple("abcde"))
    assert item_categories(side).tolist() == [4, 5, 0]
    side = ItemSide(np.full(70, -1), np.zeros((70, 0), np.int32), np.zeros(0), ())
    assert item_categories(side)[[0, 63, 64, 69]].tolist() == [0, 63, 0, 5]
