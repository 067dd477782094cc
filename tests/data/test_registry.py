"""Presets, data-root resolution, format sniffing and error messages of ``load_dataset``."""

from __future__ import annotations

import gzip
import sys
import types
from pathlib import Path

import pytest

from fedrec.data import registry
from fedrec.data.loaders import BEHAVIOR_ALIASES
from fedrec.data.registry import PRESETS, load_dataset, resolve_data_root, sniff_file, sniff_folder
from fedrec.data.schema import BEHAVIORS
from fedrec.errors import DataError

NAMES = "ml-1m, ml-100k, taobao, taobao-timeslice, amazon-video, steam, synthetic"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_preset_names():
    assert ", ".join(PRESETS) == NAMES
    assert set(BEHAVIOR_ALIASES.values()) <= set(BEHAVIORS)


def test_unknown_preset_lists_valid_names(tmp_path):
    with pytest.raises(DataError) as error:
        load_dataset("ml-2m", data_root=tmp_path)
    assert str(error.value) == (
        f"unknown dataset 'ml-2m': not a preset ({NAMES}) nor an existing file or folder")


def test_data_root_precedence(tmp_path, monkeypatch):
    env, arg = tmp_path / "env", tmp_path / "arg"
    env.mkdir()
    arg.mkdir()
    monkeypatch.setenv("FEDREC_DATA", str(env))
    assert resolve_data_root(arg) == arg
    assert resolve_data_root() == env
    monkeypatch.delenv("FEDREC_DATA")
    shared = registry.REPO_ROOT.parent / "shared" / "data"
    if shared.is_dir():
        assert resolve_data_root() == shared
    else:
        with pytest.raises(DataError, match="^no data root: pass --set data-root=<folder>"):
            resolve_data_root()


def test_data_root_not_a_folder(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"^data-root \S+missing is not a folder; point it at"):
        resolve_data_root(tmp_path / "missing")
    monkeypatch.setenv("FEDREC_DATA", str(tmp_path / "gone"))
    with pytest.raises(DataError, match=r"^FEDREC_DATA \S+gone is not a folder"):
        resolve_data_root()


@pytest.mark.parametrize(("preset", "message"), [
    ("ml-1m", "ml-1m: no ratings.dat or ratings_chrono.dat in {f}/ml-1m; download ml-1m.zip"),
    ("ml-100k", "ml-100k: no u.data in {f}/ml-100k; download ml-100k.zip"),
    ("taobao", ("taobao: no UserBehavior_head_by_user.clean.csv or UserBehavior.csv in "
                "{f}/taobao-userbehavior; download UserBehavior.csv")),
    ("taobao-timeslice", ("taobao-timeslice: no UserBehavior_timeslice_20171126.csv or "
                          "UserBehavior.csv in {f}/taobao-userbehavior")),
    ("amazon-video", ("amazon-video: no ratings.dat or ratings_Amazon_Instant_Video.csv in "
                      "{f}/amazon-video; download")),
    ("steam", "steam: no train.txt in {f}/steam; put the FedRecAttack Steam split"),
])
def test_missing_preset_files_name_folder_and_files(tmp_path, preset, message):
    with pytest.raises(DataError) as error:
        load_dataset(preset, data_root=tmp_path, use_cache=False)
    assert str(error.value).startswith(message.format(f=tmp_path))
    assert "\n" not in str(error.value) and "--set data-root=<folder>" in str(error.value)


def test_steam_needs_test_file_too(tmp_path):
    write(tmp_path / "steam" / "train.txt", "0 1\n")
    with pytest.raises(DataError, match="steam: no test.txt in"):
        load_dataset("steam", data_root=tmp_path, use_cache=False)


def test_presets_read_their_folders(tmp_path):
    write(tmp_path / "ml-1m" / "ratings_chrono.dat", "1::10\n")
    write(tmp_path / "ml-100k" / "u.data", "1\t2\t3\t4\n")
    write(tmp_path / "taobao-userbehavior" / "UserBehavior_head_by_user.clean.csv",
          "1,2,3,pv,4\n")
    write(tmp_path / "taobao-userbehavior" / "UserBehavior_timeslice_20171126.csv",
          "1,2,3,pv,4\n5,6,7,buy,8\n")
    write(tmp_path / "amazon-video" / "ratings.dat", "A,B,5.0,7\n")
    write(tmp_path / "steam" / "train.txt", "0 1 2\n")
    write(tmp_path / "steam" / "test.txt", "0 3\n")
    expected = {"ml-1m": 1, "ml-100k": 1, "taobao": 1, "taobao-timeslice": 2,
                "amazon-video": 1, "steam": 3}
    for name, n_rows in expected.items():
        data = load_dataset(name, data_root=tmp_path, cache_dir=tmp_path / "cache")
        assert (data.name, len(data)) == (name, n_rows)


def test_ml1m_preset_prefers_original_ratings(tmp_path):
    write(tmp_path / "ml-1m" / "ratings_chrono.dat", "1::10\n1::11\n")
    assert not load_dataset("ml-1m", data_root=tmp_path, use_cache=False).has_time
    write(tmp_path / "ml-1m" / "ratings.dat", "1::10::5::99\n")
    data = load_dataset("ml-1m", data_root=tmp_path, use_cache=False)
    assert data.has_time and len(data) == 1


def test_synthetic_delegates_to_generator_lazily(monkeypatch, tmp_path):
    fake = types.ModuleType("fedrec.data.synthetic")
    fake.SyntheticConfig = lambda: "default-config"
    fake.generate = lambda config: ("generated", config)
    monkeypatch.setitem(sys.modules, "fedrec.data.synthetic", fake)
    assert load_dataset("synthetic", data_root=tmp_path / "absent") == (
        "generated", "default-config")


@pytest.mark.parametrize(("text", "kind"), [
    ("1::2::3::4", "ml-1m-ratings"), ("1::2", "ml-1m-chrono"), ("1\t2\t3\t4", "ml-100k-data"),
    ("1,2,3,pv,4", "taobao"), ("A,B,5.0,1", "amazon"), ("0 1 2 3", "user-lists"),
    ("1::Toy Story::Comedy", None), ("a;b", None),
])
def test_sniff_file(tmp_path, text, kind):
    assert sniff_file(write(tmp_path / "f", text + "\n")) == kind


def test_sniff_gzip_file_and_load_by_path(tmp_path):
    path = tmp_path / "ratings_head.dat.gz"
    path.write_bytes(gzip.compress(b"1::2::3::4\n1::5::4::2\n"))
    assert sniff_file(path) == "ml-1m-ratings"
    data = load_dataset(str(path), cache_dir=tmp_path / "c")
    assert (data.name, len(data), data.has_time) == ("ratings_head", 2, True)


@pytest.mark.parametrize(("files", "preset"), [
    ({"u.data": "1\t2\t3\t4\n"}, "ml-100k"),
    ({"train.txt": "0 1\n"}, "steam"),
    ({"UserBehavior_timeslice_20171126.csv": "1,2,3,pv,4\n"}, "taobao-timeslice"),
    ({"UserBehavior.csv": "1,2,3,pv,4\n"}, "taobao"),
    ({"ratings.dat": "1::2::3::4\n"}, "ml-1m"),
    ({"ratings.dat": "A,B,5.0,1\n"}, "amazon-video"),
    ({"notes.txt": "hello\n"}, None),
])
def test_sniff_folder(tmp_path, files, preset):
    for name, text in files.items():
        write(tmp_path / name, text)
    assert sniff_folder(tmp_path) == preset


def test_explicit_folder_and_relative_path_under_data_root(tmp_path):
    write(tmp_path / "mine" / "ratings.dat", "A,B,5.0,1\nC,B,4.0,2\n")
    data = load_dataset(str(tmp_path / "mine"), use_cache=False)
    assert (data.name, len(data)) == ("amazon-video", 2)
    rel = load_dataset("mine/ratings.dat", data_root=tmp_path, use_cache=False)
    assert (rel.name, len(rel), rel.n_users) == ("ratings", 2, 2)


def test_unrecognised_file_and_folder(tmp_path):
    path = write(tmp_path / "x" / "movies.dat", "1::Toy Story::Comedy\n")
    with pytest.raises(DataError, match=r"movies.dat: unrecognised format \(first line "
                       r"'1::Toy Story::Comedy'\); use fedrec.data.loaders.load_delimited"):
        load_dataset(str(path), use_cache=False)
    with pytest.raises(DataError, match=r"x: no known dataset layout"):
        load_dataset(str(path.parent), use_cache=False)


# ---- real data (../shared/data): the counts of ../shared/data/README.md -------------------------

@pytest.mark.realdata
@pytest.mark.parametrize(("name", "rows", "users", "items", "has_time"), [
    ("ml-1m", 1_000_209, 6_040, 3_706, False),  # no ratings.dat there: ratings_chrono.dat
    ("ml-100k", 100_000, 943, 1_682, True),
    ("taobao", 84_287, 814, 55_233, True),
    ("taobao-timeslice", 110_300, 66_454, 84_793, True),
    ("amazon-video", 63_836, 8_072, 11_830, True),
    # README: 110,960 train + 3,753 test rows; 5,068 items is the train count (24 test-only items)
    ("steam", 114_713, 3_753, 5_092, False),
])
def test_real_presets_counts(shared_data, name, rows, users, items, has_time):
    data = load_dataset(name, data_root=shared_data, use_cache=False)
    assert (len(data), data.n_users, data.n_items, data.has_time) == (rows, users, items, has_time)


@pytest.mark.realdata
def test_real_taobao_behaviour_counts(shared_data):
    data = load_dataset("taobao", data_root=shared_data, use_cache=False)
    counts = data.interactions["behavior"].value_counts().to_dict()
    assert counts == {"click": 75_693, "cart": 4_494, "fav": 2_351, "buy": 1_749}


@pytest.mark.realdata
def test_real_steam_train_items_and_test_item_last(shared_data):
    data = load_dataset("steam", data_root=shared_data, use_cache=False)
    frame = data.interactions
    last = frame.groupby("user").tail(1)
    train_items = frame.drop(last.index)["item"]
    assert (len(train_items), train_items.nunique()) == (110_960, 5_068)
    first_test = (shared_data / "steam" / "test.txt").read_text().split("\n")[0].split()
    assert last.iloc[0][["user", "item"]].tolist() == [int(first_test[0]), int(first_test[1])]


@pytest.mark.realdata
def test_real_ml1m_side_features(shared_data):
    data = load_dataset("ml-1m", data_root=shared_data, use_cache=False)
    assert (len(data.user_features), len(data.item_features)) == (6_040, 3_883)
    assert data.item_features.loc[1, "genres"] == ("Animation", "Children's", "Comedy")
