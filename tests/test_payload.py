"""fedrec.payload: the one codec between cloud and devices (exact layout, errors, sizes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.common import ndarray_to_bytes

from fedrec.payload import (
    BROADCAST,
    HEADER_VERSION,
    SparseRows,
    add_sparse,
    get_sparse,
    nbytes,
    pack,
    scoped,
    split_scopes,
    unpack,
)


def test_pack_fuses_arrays_of_one_dtype_in_first_appearance_order():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([7, 8], dtype=np.int64)
    c = np.array([9.5], dtype=np.float32)
    out = pack({"b": b, "a": a, "c": c}, {"round": 3})
    assert len(out) == 3 and out[0].dtype == np.uint8
    header = json.loads(out[0].tobytes().decode())
    assert header == {"v": HEADER_VERSION, "names": ["b", "a", "c"],
                      "layout": [[0, 0, [2]], [1, 0, [2, 3]], [1, 6, [1]]], "meta": {"round": 3}}
    np.testing.assert_array_equal(out[1], b)
    np.testing.assert_array_equal(out[2], [0, 1, 2, 3, 4, 5, 9.5])
    assert out[2].dtype == np.float32


def test_unpacked_arrays_are_views_of_their_buffer():
    got, _ = unpack(pack({"x": np.ones((2, 2)), "s": np.array(3.0), "y": np.zeros(3)}))
    assert got["s"].shape == () and float(got["s"]) == 3.0
    assert got["x"].base is not None and np.shares_memory(got["x"], got["y"].base)


def test_roundtrip_keeps_names_dtypes_shapes_values_and_meta():
    arrays = {"*/item_emb": np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32),
              "17/rows.idx": np.array([3, 1], dtype=np.int64),
              "empty": np.zeros((0, 5), dtype=np.float64)}
    meta = {"devices": [17], "kind": "fit", "config": {"lr": 0.5}}
    got, got_meta = unpack(pack(arrays, meta))
    assert list(got) == list(arrays) and got_meta == meta
    for name, arr in arrays.items():
        assert got[name].dtype == arr.dtype and got[name].shape == arr.shape
        np.testing.assert_array_equal(got[name], arr)


def test_pack_makes_non_contiguous_arrays_contiguous():
    t = np.arange(12, dtype=np.float32).reshape(3, 4).T   # Fortran-ordered view
    out = pack({"t": t})
    assert out[1].flags.c_contiguous and out[1].shape == (12,)
    np.testing.assert_array_equal(unpack(out)[0]["t"], t)


def test_pack_without_meta_gives_empty_meta():
    assert unpack(pack({}))[1] == {} and unpack(pack({}))[0] == {}


def test_unpack_rejects_an_empty_payload():
    with pytest.raises(ValueError, match="empty payload: expected a header array first"):
        unpack([])


def test_unpack_rejects_another_header_version():
    raw = np.frombuffer(json.dumps({"v": 99, "names": [], "meta": {}}).encode(), np.uint8)
    with pytest.raises(ValueError, match="payload header version 99, expected 2"):
        unpack([raw])


def test_unpack_rejects_a_name_count_mismatch():
    payload = pack({"a": np.zeros(1), "b": np.zeros(1, np.int64)})
    with pytest.raises(ValueError, match="payload header names 2 arrays in 2 buffers, got 1"):
        unpack(payload[:2])


def test_sparse_rows_shape_checks():
    with pytest.raises(ValueError, match=r"SparseRows needs indices \[K\] and values \[K, dim\]"):
        SparseRows(np.array([[1]]), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="SparseRows: 2 indices but 3 value rows"):
        SparseRows(np.array([1, 2]), np.zeros((3, 2)))


def test_add_and_get_sparse_use_idx_and_val_names():
    arrays: dict[str, np.ndarray] = {}
    rows = SparseRows(np.array([5, 2], dtype=np.int32), np.ones((2, 3), np.float32))
    add_sparse(arrays, "item_emb.weight", rows)
    assert sorted(arrays) == ["item_emb.weight.idx", "item_emb.weight.val"]
    assert arrays["item_emb.weight.idx"].dtype == np.int64           # indices widened to int64
    back = get_sparse(arrays, "item_emb.weight")
    np.testing.assert_array_equal(back.indices, [5, 2])
    np.testing.assert_array_equal(back.values, rows.values)


def test_scopes_prefix_and_split_back():
    x, y = np.zeros(1), np.ones(2)
    named = {**scoped(BROADCAST, {"t": x}), **scoped(17, {"rows.idx": y, "a/b": x})}
    assert list(named) == ["*/t", "17/rows.idx", "17/a/b"]
    split = split_scopes(named)
    assert list(split) == ["*", "17"] and list(split["17"]) == ["rows.idx", "a/b"]
    assert split["*"]["t"] is x and split["17"]["rows.idx"] is y


def test_nbytes_is_the_serialized_npy_size():
    # np.save: 128-byte header (magic + dict, padded to 64) + raw data
    assert nbytes({"a": np.zeros((3, 4), np.float32)}) == 128 + 48
    assert nbytes({"a": np.zeros(0, np.int64)}) == 128
    assert nbytes({"a": np.zeros((2, 2), np.float64), "b": np.arange(5, dtype=np.int64)}) == \
        (128 + 32) + (128 + 40)
    assert nbytes({}) == 0


@pytest.mark.parametrize("a", [
    np.zeros((812, 32), np.float32), np.arange(5, dtype=np.int64), np.zeros((7, 1), np.float32),
    np.float64(2.5), np.zeros(()), np.zeros((0, 3)), np.ones((10**6 + 3,), bool),
    np.arange(12.0).reshape(3, 4).T, np.arange(24).reshape(2, 3, 4)[:, ::2],
    np.zeros(3, ">f4"), np.zeros(2, [("x", "<i4"), ("y", "<f8", (2,))]), np.array(["ab", "c"]),
])
def test_nbytes_equals_flower_serialisation_without_serialising(a):
    assert nbytes({"a": a}) == len(ndarray_to_bytes(a))
