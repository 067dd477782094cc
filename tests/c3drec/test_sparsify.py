"""Eq. 3 thresholds, gamma calibration and the sparse encodings (exact bytes by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.c3drec.sparsify import (
    KINDS,
    calibrate_gamma,
    decode,
    decode_tensors,
    encode,
    encode_rows,
    encode_tensors,
    encoded_nbytes,
    kind_of,
    raw_nbytes,
    sparsity,
    threshold,
)
from fedrec.errors import ConfigError
from fedrec.payload import nbytes

X = np.array([[0.0, 1.5, 0.0, 0.0], [0.0, 0.0, -2.0, 0.0], [0.25, 0.0, 0.0, 0.0]], np.float32)


def test_threshold_is_strict_and_copies() -> None:
    v = np.array([0.1, -0.5, 0.2, 0.05], np.float32)
    out = threshold(v, 0.1)
    np.testing.assert_array_equal(out, np.array([0.0, -0.5, 0.2, 0.0], np.float32))  # strict >
    assert v[0] == np.float32(0.1) and threshold(v, 0.0) is not v


def test_calibrate_gamma_reaches_the_target_share() -> None:
    v = np.array([0.1, -0.5, 0.2, 0.05])
    assert calibrate_gamma(v, 0.5) == pytest.approx(0.1)
    assert sparsity(threshold(v, calibrate_gamma(v, 0.5))) == 0.5
    assert calibrate_gamma(v, 0.0) == 0.0 and calibrate_gamma(v, 0.6) == pytest.approx(0.2)
    with pytest.raises(ConfigError):
        calibrate_gamma(v, 1.0)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(kind: str) -> None:
    x, keep = decode(encode(X, kind))
    np.testing.assert_array_equal(x, X)
    assert x.dtype == np.float32 and x.shape == X.shape
    assert keep.tolist() == ((X != 0) if kind != "dense" else np.ones_like(X, bool)).tolist()


def test_byte_sizes_by_hand() -> None:
    # 3 x 4 float32 with 3 nonzeros; shape = 2 int64 = 16 bytes
    expected = {"dense": 48, "coo": 16 + 3 * 4 + 3 * 4, "csr": 16 + 3 + 3 + 12,
                "bitmap": 16 + 3 * 1 + 12}
    assert {k: raw_nbytes(encode(X, k)) for k in KINDS} == expected
    assert kind_of(encode(X, "auto")) == "bitmap"                      # the smallest
    dense = np.ones((3, 4), np.float32)
    assert kind_of(encode(dense, "auto")) == "dense"
    assert nbytes(encode(X, "csr")) > raw_nbytes(encode(X, "csr"))   # wire framing on top


def test_explicit_keep_mask_keeps_a_zero_weight() -> None:
    keep = X != 0
    keep[0, 0] = True                                                  # a kept weight that is 0
    for kind in ("coo", "csr", "bitmap"):
        x, got = decode(encode(X, kind, keep))
        np.testing.assert_array_equal(x, X)
        assert got.tolist() == keep.tolist()


def test_wide_rows_use_wider_column_ids_and_3d_shapes() -> None:
    w = np.zeros((2, 300), np.float32)
    w[1, 299] = 3.0
    enc = encode(w, "csr")
    assert enc["col"].dtype == np.uint16 and enc["cnt"].tolist() == [0, 1]
    np.testing.assert_array_equal(decode(enc)[0], w)
    t = np.arange(24, dtype=np.float32).reshape(2, 3, 4) % 5
    for kind in KINDS:
        np.testing.assert_array_equal(decode(encode(t, kind))[0], t)


def test_named_tensors_round_trip_and_ignore_other_keys() -> None:
    tensors = {"gru.weight_ih_l0": X, "gru.bias_ih_l0": np.arange(3, dtype=np.float32)}
    payload = encode_tensors(tensors, "auto", prefix="m.")
    payload["gamma"] = np.array([0.5])
    got, masks = decode_tensors(payload, "m.")
    assert set(got) == set(tensors)
    for n, t in tensors.items():
        np.testing.assert_array_equal(got[n], t)
    assert masks["gru.weight_ih_l0"].sum() == 3


@pytest.mark.parametrize("shape", [(3, 4), (7,), (5, 2, 3), (4, 17), (2, 300)])
def test_encoded_nbytes_is_the_size_of_each_encoding(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape))
    x = (rng.standard_normal(shape) * (rng.random(shape) < 0.3)).astype(np.float32)
    for kind in KINDS:
        assert encoded_nbytes(shape, int((x != 0).sum()), kind) == raw_nbytes(encode(x, kind))


@pytest.mark.parametrize("kind", [*KINDS, "auto"])
@pytest.mark.parametrize("density", [0.05, 0.5, 1.0])
def test_encode_rows_equals_encoding_the_full_tensor(kind: str, density: float) -> None:
    """A device's delta of an item table: nonzero only in its own rows, some of them zero."""
    rng = np.random.default_rng(3)
    rows = np.array([1, 4, 5, 9])
    vals = (rng.standard_normal((4, 6)) * (rng.random((4, 6)) < density)).astype(np.float32)
    vals[2] = 0.0                                                      # a row that did not move
    full = np.zeros((12, 6), np.float32)
    full[rows] = vals
    got, want = encode_rows(full.shape, rows, vals, kind), encode(full, kind)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype
        np.testing.assert_array_equal(got[k], want[k])
    np.testing.assert_array_equal(decode(got)[0], full)
    empty = encode_rows((12, 6), np.zeros(0, np.int64), np.zeros((0, 6), np.float32), kind)
    assert empty.keys() == encode(np.zeros((12, 6), np.float32), kind).keys()
