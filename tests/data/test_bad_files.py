"""Damaged, empty, missing and unreadable data files: one DataError line naming file and fix."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from fedrec.data import loaders as ld
from fedrec.data.loaders_io import first_line, read_fields
from fedrec.data.registry import load_dataset
from fedrec.errors import DataError

LINES = "".join(f"{u}::{i}::4::{978300000 + i}\n" for u in range(1, 300) for i in range(1, 30))
KINDS = {0: "int", 1: "int", 2: "float", 3: "int"}


def one_line(error: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.fixture
def truncated(tmp_path) -> Path:
    """A real gzip stream cut in the middle (a download that stopped)."""
    blob = gzip.compress(LINES.encode())
    path = tmp_path / "ratings.dat.gz"
    path.write_bytes(blob[: len(blob) // 2])
    return path


def test_truncated_gzip_through_load_dataset(truncated):
    with pytest.raises(DataError) as error:
        load_dataset(str(truncated), use_cache=False)
    assert one_line(error) == (
        f"{truncated}: truncated or damaged gzip file (Compressed file ended before the "
        "end-of-stream marker was reached); copy or download it again (gzip -t checks a file)")


def test_truncated_gzip_through_read_fields(truncated):
    with pytest.raises(DataError, match=r"ratings.dat.gz: truncated or damaged gzip file"):
        read_fields(truncated, sep="::", n_fields=4, kinds=KINDS, fmt="u::i::r::t")


def test_damaged_gzip_stream(tmp_path):
    blob = bytearray(gzip.compress(LINES.encode()))
    blob[20:60] = b"\x00" * 40                           # corrupt deflate data after the header
    path = tmp_path / "r.dat.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError) as error:
        read_fields(path, sep="::", n_fields=4, kinds=KINDS, fmt="u::i::r::t")
    assert one_line(error).startswith(f"{path}: truncated or damaged gzip file (")


def test_folder_where_a_file_is_expected(tmp_path):
    (tmp_path / "ratings.dat").mkdir()
    with pytest.raises(DataError) as error:
        read_fields(tmp_path / "ratings.dat", sep="::", n_fields=4, kinds=KINDS, fmt="u::i::r::t")
    assert one_line(error) == (f"{tmp_path / 'ratings.dat'}: is a folder, not a data file; give "
                               "the file inside it, or the folder itself as the dataset")
    with pytest.raises(DataError, match="is a folder, not a data file"):
        first_line(tmp_path / "ratings.dat")


def test_binary_user_lists_file(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes(b"1 2 3\n\xff\xfe\x00 4\n")
    with pytest.raises(DataError) as error:
        ld.load_user_lists([path])
    assert one_line(error).startswith(f"{path}: not utf-8 text (invalid start byte at byte ")


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", gzip.compress(b"")])
def test_empty_file_says_empty(tmp_path, content):
    path = tmp_path / "ratings.dat"
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        load_dataset(str(path), use_cache=False)
    assert one_line(error) == (f"{path}: file is empty; give a data file with one interaction "
                               "per line (e.g. 'user::item::rating::time')")


@pytest.mark.parametrize("name", ["ratings.dat", "sub/ratings.dat", "sub/folder"])
def test_missing_file_says_not_found(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as error:
        load_dataset(name, data_root=tmp_path, use_cache=False)
    assert one_line(error) == (f"{name}: file not found (looked in the working folder and the "
                               "data root); check the path")


def test_an_unknown_name_still_lists_the_presets(tmp_path):
    with pytest.raises(DataError, match=r"^unknown dataset 'ml-2m': not a preset \(ml-1m, "):
        load_dataset("ml-2m", data_root=tmp_path)
