"""Parsed-binary cache: hits skip parsing, content changes invalidate, writes are atomic."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedrec.data import cache, loaders_movielens
from fedrec.data.registry import load_dataset
from fedrec.data.schema import Dataset, make_interactions


def tiny(name: str = "t", users=(1, 2)) -> Dataset:
    n = len(users)
    return Dataset(name, make_interactions(np.array(users), np.arange(n), np.arange(n)), True)


class Counter:
    """A build function that counts its calls."""

    def __init__(self, data: Dataset) -> None:
        self.data, self.calls = data, 0

    def __call__(self) -> Dataset:
        self.calls += 1
        return self.data


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "src.dat"
    path.write_text("1::10\n2::20\n")
    return path


def test_second_load_is_a_hit_and_equal(tmp_path, source):
    build = Counter(tiny())
    first = cache.load_cached("t", "x", {"path": source}, build, tmp_path / "c")
    second = cache.load_cached("t", "x", {"path": source}, build, tmp_path / "c")
    assert build.calls == 1
    pd.testing.assert_frame_equal(first.interactions, second.interactions)
    assert second.source == (str(source),) and first.source == (str(source),)


def test_same_size_same_mtime_content_change_invalidates(tmp_path, source):
    build = Counter(tiny())
    cache.load_cached("t", "x", {"path": source}, build, tmp_path)
    stat = source.stat()
    source.write_text("1::10\n2::21\n")  # same size
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    cache.load_cached("t", "x", {"path": source}, build, tmp_path)
    assert build.calls == 2
    assert len(list(tmp_path.glob("t-*.pkl"))) == 2


def test_key_depends_on_loader_and_role(source):
    base = cache.cache_key("a", {"path": source})
    assert base == cache.cache_key("a", {"path": source})
    assert base != cache.cache_key("b", {"path": source})
    assert base != cache.cache_key("a", {"other": source})


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "not-a-dataset"])
def test_corrupted_entry_is_ignored_and_rebuilt(tmp_path, source, damage):
    build = Counter(tiny())
    cache.load_cached("t", "x", {"path": source}, build, tmp_path)
    (entry,) = tmp_path.glob("t-*.pkl")
    blob = entry.read_bytes()
    if damage == "truncate":
        entry.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":
        entry.write_bytes(blob[:-5] + bytes([blob[-5] ^ 1]) + blob[-4:])
    elif damage == "garbage":
        entry.write_bytes(b"not a cache entry")
    else:  # a well-formed entry that holds the wrong type
        payload = pickle.dumps({"a": 1})
        entry.write_bytes(cache.MAGIC + hashlib.sha256(payload).digest() + payload)
    assert cache.read_entry(entry) is None
    again = cache.load_cached("t", "x", {"path": source}, build, tmp_path)
    assert build.calls == 2 and len(again) == 2
    assert cache.read_entry(entry) is not None  # rewritten whole


def test_failed_write_leaves_old_entry_and_no_temporary_file(tmp_path, monkeypatch):
    entry = tmp_path / "t-k.pkl"
    cache.write_entry(entry, tiny(users=(1, 2)))
    before = entry.read_bytes()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(cache.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        cache.write_entry(entry, tiny(users=(3, 4, 5)))
    assert entry.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t-k.pkl"]


def test_unwritable_cache_warns_and_still_returns_data(tmp_path, source, monkeypatch):
    def crash(fd):
        raise OSError("read-only")

    monkeypatch.setattr(cache.os, "fsync", crash)
    with pytest.warns(UserWarning, match="could not write the dataset cache"):
        data = cache.load_cached("t", "x", {"path": source}, Counter(tiny()), tmp_path)
    assert len(data) == 2 and list(tmp_path.iterdir()) == [source]


def test_default_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDREC_CACHE", str(tmp_path))
    assert cache.default_cache_dir() == tmp_path
    monkeypatch.delenv("FEDREC_CACHE")
    assert cache.default_cache_dir() == Path.home() / ".cache" / "fedrec"


def test_entry_name_is_filename_safe(tmp_path):
    assert cache.entry_path(tmp_path, "a/b c", "k") == tmp_path / "a_b_c-k.pkl"


def test_load_dataset_second_call_does_not_parse(tmp_path, monkeypatch):
    """Through the registry: the parser runs once; a content change makes it run again."""
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings_chrono.dat").write_text("1::10\n1::11\n2::10\n")
    calls = []
    real = loaders_movielens.read_fields

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(loaders_movielens, "read_fields", counting)
    first = load_dataset("ml-1m", data_root=tmp_path, cache_dir=tmp_path / "c")
    second = load_dataset("ml-1m", data_root=tmp_path, cache_dir=tmp_path / "c")
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first.interactions, second.interactions)
    (folder / "ratings_chrono.dat").write_text("1::10\n1::11\n2::12\n")
    third = load_dataset("ml-1m", data_root=tmp_path, cache_dir=tmp_path / "c")
    assert len(calls) == 2 and third.interactions["item"].tolist() == [10, 11, 12]
    load_dataset("ml-1m", data_root=tmp_path, cache_dir=tmp_path / "c", use_cache=False)
    assert len(calls) == 3
