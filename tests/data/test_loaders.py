"""Loaders on tiny hand-written files: exact rows, dtypes, side features and error messages."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedrec.data import loaders as ld
from fedrec.data.loaders_io import read_fields
from fedrec.data.schema import BEHAVIORS, COLUMNS
from fedrec.errors import ConfigError, DataError

DTYPES = {"user": np.dtype("int64"), "item": np.dtype("int64"), "ts": np.dtype("int64"),
          "rating": np.dtype("float32"), "category": np.dtype("int64")}


def write(path: Path, text: str, encoding: str = "utf-8", gz: bool = False) -> Path:
    data = text.encode(encoding)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def rows(data, columns=("user", "item", "ts")) -> list[tuple]:
    return [tuple(r) for r in data.interactions[list(columns)].itertuples(index=False)]


def check_schema(data) -> None:
    frame = data.interactions
    assert tuple(frame.columns) == COLUMNS
    assert {c: frame[c].dtype for c in DTYPES} == DTYPES
    assert list(frame["behavior"].cat.categories) == list(BEHAVIORS)


ML1M = "2::20::3::200\n1::10::5::300\n1::11::4::100\n1::12::1::300\n"


# ---- MovieLens-1M ------------------------------------------------------------------------------

def test_ml1m_ratings_exact_rows_sorted_by_user_then_time_then_file_order(tmp_path):
    data = ld.load_ml1m_ratings(write(tmp_path / "ratings.dat", ML1M))
    check_schema(data)
    assert data.has_time and data.name == "ml-1m"
    assert rows(data, ("user", "item", "ts", "rating")) == [
        (1, 11, 100, 4.0), (1, 10, 300, 5.0), (1, 12, 300, 1.0), (2, 20, 200, 3.0)]
    assert set(data.interactions["behavior"]) == {"click"}
    assert (data.interactions["category"] == -1).all()


@pytest.mark.parametrize("name", ["ratings.dat.gz", "ratings.dat"])
def test_gzip_is_read_by_content_whatever_the_name(tmp_path, name):
    plain = ld.load_ml1m_ratings(write(tmp_path / "plain.dat", ML1M))
    zipped = ld.load_ml1m_ratings(write(tmp_path / name, ML1M, gz=True))
    pd.testing.assert_frame_equal(plain.interactions, zipped.interactions)


def test_ml1m_chrono_uses_position_in_history_as_time(tmp_path):
    path = write(tmp_path / "ratings_chrono.dat", "1::30\n2::5\n1::10\n1::20\n")
    data = ld.load_ml1m_chrono(path)
    check_schema(data)
    assert not data.has_time
    assert rows(data) == [(1, 30, 0), (1, 10, 1), (1, 20, 2), (2, 5, 0)]
    assert data.interactions["rating"].isna().all()


@pytest.mark.parametrize(("text", "line", "head"), [
    ("1::2::3::4\n1::2::x::4\n", 2, "1::2::x::4"),             # non-numeric rating
    ("1::2::3::4\n\n1::2::3::4\n1:2:3:4\n", 4, "1:2:3:4"),     # single colons; blank line counted
    ("1::2::3::4\n1::2::3::4::5\n", 2, "1::2::3::4::5"),       # too many fields
    ("1::2::3::4\n1::2::3\n", 2, "1::2::3"),                   # too few fields
    ("1::2::3::4\n1::2::3::4.5\n", 2, "1::2::3::4.5"),         # non-integer timestamp
])
def test_ml1m_malformed_line_names_file_line_and_format(tmp_path, text, line, head):
    path = write(tmp_path / "ratings.dat", text)
    with pytest.raises(DataError) as error:
        ld.load_ml1m_ratings(path)
    assert str(error.value) == (
        f"{path}:{line}: expected 'UserID::MovieID::Rating::Timestamp', got '{head}'")


def test_malformed_line_in_gzip_and_long_line_head_is_cut(tmp_path):
    bad = "9" * 100
    path = write(tmp_path / "r.dat.gz", "1::2::3::4\n" * 5 + bad + "\n", gz=True)
    with pytest.raises(DataError, match=rf":6: expected .*, got '{'9' * 60}'$"):
        ld.load_ml1m_ratings(path)


def test_empty_file_says_no_data_lines(tmp_path):
    path = write(tmp_path / "ratings.dat", "\n")
    with pytest.raises(DataError, match="no data lines; expected lines like 'UserID::MovieID"):
        ld.load_ml1m_ratings(path)


def test_ml1m_side_features_latin1_and_colon_in_title(tmp_path):
    users = write(tmp_path / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072-1234\n")
    movies = write(tmp_path / "movies.dat", "10::Star Wars: Episode IV (1977)::Action|Sci-Fi\n"
                   "11::Misérables, Les (1995)::Drama\n", encoding="latin-1")
    ratings = write(tmp_path / "ratings_chrono.dat", "1::10\n2::11\n")
    data = ld.load_ml1m(**ld.ml1m_files(tmp_path))
    assert not data.has_time  # two fields -> chrono file
    assert data.user_features.to_dict("index") == {
        1: {"gender": "F", "age": 1, "occupation": 10, "zip": "48067"},
        2: {"gender": "M", "age": 56, "occupation": 16, "zip": "70072-1234"}}
    assert data.item_features.loc[10, "title"] == "Star Wars: Episode IV (1977)"
    assert data.item_features.loc[11, "title"] == "Misérables, Les (1995)"
    assert data.item_features["genres"].tolist() == [("Action", "Sci-Fi"), ("Drama",)]
    assert data.source == (str(ratings), str(users), str(movies))


def test_ml1m_movies_bad_line(tmp_path):
    path = write(tmp_path / "movies.dat", "1::A::Drama\nx::B::Drama\n")
    with pytest.raises(DataError, match=r"movies.dat:2: expected 'MovieID::Title::Genres', got"):
        ld.read_ml1m_movies(path)


def test_ml1m_files_prefers_original_ratings_and_names_missing_files(tmp_path):
    write(tmp_path / "ratings_chrono.dat", "1::10\n")
    assert ld.ml1m_files(tmp_path) == {"ratings": tmp_path / "ratings_chrono.dat"}
    write(tmp_path / "ratings.dat", ML1M)
    assert ld.ml1m_files(tmp_path)["ratings"] == tmp_path / "ratings.dat"
    with pytest.raises(DataError) as error:
        ld.ml1m_files(tmp_path / "empty")
    assert str(error.value) == (
        f"ml-1m: no ratings.dat or ratings_chrono.dat in {tmp_path / 'empty'}; download ml-1m.zip "
        "from https://grouplens.org/datasets/movielens/1m/ and unzip it there, or pass --set "
        "data-root=<folder>")


def test_missing_file_names_path_and_expected_file(tmp_path):
    with pytest.raises(DataError, match=r"^\S+nope.dat: file not found; expected ratings.dat$"):
        ld.load_ml1m(tmp_path / "nope.dat")


# ---- MovieLens-100K ----------------------------------------------------------------------------

def test_ml100k_data_items_users(tmp_path):
    write(tmp_path / "u.data", "2\t7\t3\t50\n1\t7\t5\t90\n1\t8\t4\t10\n")
    flags = ["0"] * 19
    flags[1] = flags[16] = "1"  # Action, Thriller
    write(tmp_path / "u.item", "7|GoldenEye (1995)|01-Jan-1995||http://x|" + "|".join(flags)
          + "\n8|Café (1990)|||http://y|1" + "|0" * 18 + "\n", encoding="latin-1")
    write(tmp_path / "u.user", "1|24|M|technician|85711\n2|53|F|other|T8H1N\n")
    data = ld.load_ml100k(**ld.ml100k_files(tmp_path))
    check_schema(data)
    assert data.has_time and data.name == "ml-100k"
    assert rows(data, ("user", "item", "ts", "rating")) == [
        (1, 8, 10, 4.0), (1, 7, 90, 5.0), (2, 7, 50, 3.0)]
    assert data.item_features.to_dict("index") == {
        7: {"title": "GoldenEye (1995)", "genres": ("Action", "Thriller")},
        8: {"title": "Café (1990)", "genres": ("unknown",)}}
    assert data.user_features.loc[2].tolist() == [53, "F", "other", "T8H1N"]


def test_ml100k_missing_u_data(tmp_path):
    with pytest.raises(DataError, match=r"^ml-100k: no u.data in \S+; download ml-100k.zip from "
                       r"https://grouplens.org/datasets/movielens/100k/"):
        ld.ml100k_files(tmp_path)


# ---- Taobao, Amazon ----------------------------------------------------------------------------

def test_taobao_behaviours_and_categories(tmp_path):
    path = write(tmp_path / "ub.csv", "5,100,7,pv,20\n5,101,8,buy,10\n3,100,7,fav,30\n"
                 "3,102,9,cart,30\n")
    data = ld.load_taobao(path)
    check_schema(data)
    assert data.has_time and data.name == "taobao"
    assert rows(data, ("user", "item", "ts", "behavior", "category")) == [
        (3, 100, 30, "fav", 7), (3, 102, 30, "cart", 9), (5, 101, 10, "buy", 8),
        (5, 100, 20, "click", 7)]


def test_taobao_unknown_behaviour_is_a_bad_line(tmp_path):
    path = write(tmp_path / "ub.csv", "5,100,7,pv,20\n5,101,8,like,10\n")
    with pytest.raises(DataError) as error:
        ld.load_taobao(path)
    assert str(error.value) == (
        f"{path}:2: expected 'user,item,category,behavior,ts', got '5,101,8,like,10'")


def test_amazon_string_ids_first_seen_order_and_reversible(tmp_path):
    path = write(tmp_path / "ratings.csv", "AX,B9,5.0,300\nAY,B1,2.0,100\nAX,B1,4.0,200\n")
    data = ld.load_amazon(path)
    check_schema(data)
    assert rows(data, ("user", "item", "ts", "rating")) == [
        (0, 1, 200, 4.0), (0, 0, 300, 5.0), (1, 1, 100, 2.0)]
    assert data.user_features["label"].tolist() == ["AX", "AY"]
    assert data.item_features.loc[1, "label"] == "B1"
    assert data.item_features.index.name == "item"


# ---- Steam / LightGCN --------------------------------------------------------------------------

def test_steam_train_then_test_per_user(tmp_path):
    train = write(tmp_path / "train.txt", "1 5 6 \n0 4\n")
    test = write(tmp_path / "test.txt", "0 9\n1 7\n")
    data = ld.load_steam(train, test)
    check_schema(data)
    assert not data.has_time and data.name == "steam"
    assert rows(data) == [(0, 4, 0), (0, 9, 1), (1, 5, 0), (1, 6, 1), (1, 7, 2)]
    assert data.source == (str(train), str(test))


def test_user_lists_bad_token(tmp_path):
    path = write(tmp_path / "train.txt", "0 1 2\n\n1 3 x\n")
    with pytest.raises(DataError, match=r"train.txt:3: expected 'user item1 item2 ...' "
                       r"\(integers\), got '1 3 x'$"):
        ld.load_user_lists([path])


# ---- generic delimited files -------------------------------------------------------------------

def test_generic_header_names_any_order_string_users(tmp_path):
    path = write(tmp_path / "log.tsv",
                 "when\titem\twho\tstars\n50\t3\tbob\t2.5\n10\t4\tann\t1\n20\t3\tbob\t5\n")
    columns = ld.ColumnMap(user="who", item="item", ts="when", rating="stars", sep="\t",
                           header=True)
    data = ld.load_delimited(path, columns)
    check_schema(data)
    assert data.name == "log" and data.has_time
    assert rows(data, ("user", "item", "ts", "rating")) == [
        (0, 3, 20, 5.0), (0, 3, 50, 2.5), (1, 4, 10, 1.0)]
    assert data.user_features["label"].tolist() == ["bob", "ann"]
    assert data.item_features is None  # integer item ids are kept as they are


def test_generic_positions_double_colon_no_time(tmp_path):
    path = write(tmp_path / "x.dat", "7::1::pv\n7::2::buy\n3::1::click\n")
    data = ld.load_delimited(path, ld.ColumnMap(user=0, item=1, behavior=2, sep="::"))
    assert not data.has_time
    assert rows(data, ("user", "item", "ts", "behavior")) == [
        (3, 1, 0, "click"), (7, 1, 0, "click"), (7, 2, 1, "buy")]


def test_generic_text_with_separator_char_falls_back_to_exact_read(tmp_path):
    # "a:b" breaks the one-character trick for "::" but is a valid field: exact slow read
    path = write(tmp_path / "x.dat", "1::10::a:b\n2::11::c\n1::12::c\n")
    data = ld.load_delimited(path, ld.ColumnMap(user=0, item=1, category=2, sep="::"))
    assert rows(data, ("user", "item", "category")) == [(1, 10, 0), (1, 12, 1), (2, 11, 1)]


def test_generic_quoted_csv(tmp_path):
    path = write(tmp_path / "q.csv", 'user,item,ts\n"u,1",5,1\nu2,"6",2\n')
    columns = ld.ColumnMap(user="user", item="item", ts="ts", header=True, quoted=True)
    data = ld.load_delimited(path, columns)
    assert data.user_features["label"].tolist() == ["u,1", "u2"]
    assert rows(data, ("user", "item", "ts")) == [(0, 5, 1), (1, 6, 2)]


def test_generic_true_multichar_separator(tmp_path):
    path = write(tmp_path / "x.txt", "1 | 5 | 9\n2 | 6 | 8\n")
    data = ld.load_delimited(path, ld.ColumnMap(user=0, item=1, ts=2, sep=" | "))
    assert rows(data) == [(1, 5, 9), (2, 6, 8)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"user": "u", "item": 1}, "names columns but header=False"),
    ({"user": 0, "item": 0}, "refers to one column twice"),
    ({"user": 0, "item": 1, "sep": ""}, "sep is empty"),
    ({"user": -1, "item": 1}, "must be >= 0"),
])
def test_column_map_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ld.ColumnMap(**kwargs)


def test_generic_unknown_header_column_and_out_of_range_position(tmp_path):
    path = write(tmp_path / "h.csv", "a,b\n1,2\n")
    with pytest.raises(DataError, match=r"no column 'user' in header \['a', 'b'\]"):
        ld.load_delimited(path, ld.ColumnMap(user="user", item="b", header=True))
    with pytest.raises(DataError, match="ts is column 5 but the first line has 2 fields"):
        ld.load_delimited(path, ld.ColumnMap(user=0, item=1, ts=5, header=True))


def test_wrong_encoding_is_one_line_error(tmp_path):
    path = write(tmp_path / "m.csv", "1,Café,3\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"m.csv: not utf-8 text \(invalid continuation byte"):
        read_fields(path, sep=",", n_fields=3, kinds={0: "int", 1: "str"}, fmt="a,b,c")
    frame = read_fields(path, sep=",", n_fields=3, kinds={1: "str"}, fmt="a,b,c",
                        encoding="latin-1")
    assert frame[1].tolist() == ["Café"]


def test_read_fields_returns_requested_positions_only(tmp_path):
    path = write(tmp_path / "f.txt", "1,x,2.5\n3,y,4\n")
    frame = read_fields(path, sep=",", n_fields=3, kinds={0: "int", 2: "float"}, fmt="a,b,c")
    assert list(frame.columns) == [0, 2]
    assert frame[0].tolist() == [1, 3] and frame[2].tolist() == [2.5, 4.0]


# ---- real data (../shared/data) ----------------------------------------------------------------

@pytest.mark.realdata
def test_real_ml1m_original_gz_head(shared_data):
    data = ld.load_ml1m_ratings(shared_data / "ml-1m" / "ratings_users0001-2999.dat.gz")
    assert (len(data), data.n_users) == (487_650, 2_999)
    assert data.has_time and data.interactions["rating"].between(1, 5).all()
    assert data.interactions.iloc[0][["user", "item", "ts"]].tolist() == [1, 3186, 978300019]


@pytest.mark.realdata
def test_real_ml1m_chrono_order_matches_original_times(shared_data):
    """Each user's chrono items, timed by the original file, are in non-decreasing time."""
    chrono = ld.load_ml1m_chrono(shared_data / "ml-1m" / "ratings_chrono.dat")
    original = ld.load_ml1m_ratings(shared_data / "ml-1m" / "ratings_users0001-2999.dat.gz")
    head = chrono.interactions[chrono.interactions["user"] <= 2999]
    timed = head.merge(original.interactions[["user", "item", "ts"]], on=["user", "item"],
                       how="left", suffixes=("_pos", ""))
    assert len(timed) == len(original) and timed["ts"].notna().all()
    assert (timed.groupby("user")["ts"].diff().fillna(0) >= 0).all()
    assert (timed["ts_pos"] == timed.groupby("user").cumcount()).all()
