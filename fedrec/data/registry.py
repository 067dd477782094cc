"""Named dataset presets and :func:`load_dataset`, the one entry point for run configs.

``load_dataset(name_or_path)`` accepts

- a preset name (``PRESETS``), resolved under the data root: the ``data_root`` argument, else
  env ``FEDREC_DATA``, else ``<repo>/../shared/data`` when it exists;
- an existing folder laid out like a preset folder (recognised by its files: ``u.data`` ->
  ml-100k, ``train.txt`` -> steam, ``UserBehavior*.csv`` -> taobao, ``ratings_chrono.dat`` or a
  ``::`` ``ratings.dat`` -> ml-1m, a csv ``ratings.dat`` -> amazon-video);
- an existing file, recognised by its first line: ``a::b::c::d`` (ML-1M ratings, ``.gz`` too),
  ``a::b`` (ML-1M chrono), ``a<TAB>b<TAB>c<TAB>d`` (ML-100K ``u.data``), 5 csv fields with a
  behaviour in the 4th (Taobao), 4 csv fields (Amazon), ``u i1 i2 ...`` (Steam/LightGCN);
- a path relative to the data root (e.g. ``ml-1m/ratings_users0001-2999.dat.gz``).

Other layouts: :func:`fedrec.data.loaders.load_delimited` with a ``ColumnMap``.
Parsed results are cached by content checksum (``fedrec.data.cache``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedrec.data import loaders as ld
from fedrec.data.cache import load_cached
from fedrec.data.loaders_io import first_line
from fedrec.data.schema import Dataset
from fedrec.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[2]
_HINT = "or pass --set data-root=<folder> (or set FEDREC_DATA)"


@dataclass(frozen=True)
class Preset:
    """A named dataset: where its files live under the data root and how to read them.

    Attributes
    ----------
    name: preset name.
    folder: sub-folder of the data root (None: needs no files).
    files: folder -> role -> path (raises a one-line DataError when a required file is missing).
    load: ``load(**files, name=name) -> Dataset``.
    about: one line for listings and docs.
    """

    name: str
    folder: str | None
    files: Callable[[Path], dict[str, Path]]
    load: Callable[..., Dataset]
    about: str


def _first_of(folder: Path, names: tuple[str, ...], preset: str, fix: str) -> Path:
    """First of ``names`` that is a file in ``folder``, else a one-line DataError."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{preset}: no {' or '.join(names)} in {folder}; {fix}, {_HINT}")


def _taobao_files(name: str, preferred: str) -> Callable[[Path], dict[str, Path]]:
    fix = ("download UserBehavior.csv (Tianchi dataset 649, https://tianchi.aliyun.com/"
           "dataset/649) into it")
    return lambda folder: {"path": _first_of(folder, (preferred, "UserBehavior.csv"), name, fix)}


def _amazon_files(folder: Path) -> dict[str, Path]:
    fix = ("download ratings_Amazon_Instant_Video.csv from "
           "https://jmcauley.ucsd.edu/data/amazon/ into it")
    names = ("ratings.dat", "ratings_Amazon_Instant_Video.csv")
    return {"path": _first_of(folder, names, "amazon-video", fix)}


def _steam_files(folder: Path) -> dict[str, Path]:
    fix = "put the FedRecAttack Steam split (train.txt and test.txt) there"
    return {role: _first_of(folder, (f"{role}.txt",), "steam", fix) for role in ("train", "test")}


def _load_synthetic(*, name: str) -> Dataset:
    """The embedded default (imported lazily: ``fedrec.data.synthetic``)."""
    from fedrec.data.synthetic import SyntheticConfig, generate

    return generate(SyntheticConfig())


def _path_loader(loader: Callable[..., Dataset]) -> Callable[..., Dataset]:
    return lambda *, path, name: loader(path, name=name)


PRESETS: dict[str, Preset] = {
    "ml-1m": Preset("ml-1m", "ml-1m", ld.ml1m_files, ld.load_ml1m,
                    "MovieLens-1M: ratings.dat (times, ratings) else ratings_chrono.dat (order)"),
    "ml-100k": Preset("ml-100k", "ml-100k", ld.ml100k_files, ld.load_ml100k,
                      "MovieLens-100K: u.data (+ u.item, u.user)"),
    "taobao": Preset("taobao", "taobao-userbehavior",
                     _taobao_files("taobao", "UserBehavior_head_by_user.clean.csv"),
                     _path_loader(ld.load_taobao),
                     "Taobao UserBehavior: complete histories of 814 users (head_by_user)"),
    "taobao-timeslice": Preset(
        "taobao-timeslice", "taobao-userbehavior",
        _taobao_files("taobao-timeslice", "UserBehavior_timeslice_20171126.csv"),
        _path_loader(ld.load_taobao), "Taobao UserBehavior: a 2.2-hour slice, many users"),
    "amazon-video": Preset("amazon-video", "amazon-video", _amazon_files,
                           _path_loader(ld.load_amazon),
                           "Amazon Instant Video ratings (PFedRec)"),
    "steam": Preset("steam", "steam", _steam_files, ld.load_steam,
                    "Steam (FedRecAttack): train.txt then test.txt per user"),
    "synthetic": Preset("synthetic", None, lambda folder: {}, _load_synthetic,
                        "seeded synthetic data with a planted personal signal (no files)"),
}


def resolve_data_root(data_root: str | Path | None = None) -> Path:
    """Data root: ``data_root`` > env ``FEDREC_DATA`` > ``<repo>/../shared/data`` if present."""
    for given, origin in ((data_root, "data-root"), (os.environ.get("FEDREC_DATA"), "FEDREC_DATA")):
        if given:
            root = Path(given).expanduser()
            if not root.is_dir():
                raise DataError(f"{origin} {root} is not a folder; point it at the folder "
                                f"holding ml-1m/, ml-100k/, ... ({', '.join(PRESETS)})")
            return root
    shared = REPO_ROOT.parent / "shared" / "data"
    if shared.is_dir():
        return shared
    raise DataError("no data root: pass --set data-root=<folder> (or set FEDREC_DATA) naming the "
                    "folder holding ml-1m/, ml-100k/, ... (or use the 'synthetic' preset, which "
                    "needs no files)")


#: Single-file formats: kind -> ``loader(path, name)``.
FILE_LOADERS: dict[str, Callable[[Path, str], Dataset]] = {
    "ml-1m-ratings": lambda p, name: ld.load_ml1m_ratings(p, name=name),
    "ml-1m-chrono": lambda p, name: ld.load_ml1m_chrono(p, name=name),
    "ml-100k-data": lambda p, name: ld.load_ml100k(p, name=name),
    "taobao": lambda p, name: ld.load_taobao(p, name=name),
    "amazon": lambda p, name: ld.load_amazon(p, name=name),
    "user-lists": lambda p, name: ld.load_user_lists([p], name=name),
}


def sniff_file(path: Path) -> str | None:
    """Kind of a single data file (a ``FILE_LOADERS`` key) from its first line, or None."""
    line = first_line(path, "latin-1")
    if "::" in line:
        return {4: "ml-1m-ratings", 2: "ml-1m-chrono"}.get(len(line.split("::")))
    if line.count("\t") == 3:
        return "ml-100k-data"
    fields = line.split(",")
    if len(fields) == 5 and fields[3] in ld.BEHAVIOR_ALIASES:
        return "taobao"
    if len(fields) == 4:
        return "amazon"
    if line.split() and all(token.isdigit() for token in line.split()):
        return "user-lists"
    return None


def sniff_folder(folder: Path) -> str | None:
    """Preset whose layout ``folder`` has, or None."""
    if (folder / "u.data").is_file():
        return "ml-100k"
    if (folder / "train.txt").is_file():
        return "steam"
    if any(folder.glob("UserBehavior*.csv")):
        return "taobao" if (folder / "UserBehavior_head_by_user.clean.csv").is_file() or (
            folder / "UserBehavior.csv").is_file() else "taobao-timeslice"
    ratings = folder / "ratings.dat"
    if (folder / "ratings_chrono.dat").is_file() or (
            ratings.is_file() and "::" in first_line(ratings, "latin-1")):
        return "ml-1m"
    if ratings.is_file() or (folder / "ratings_Amazon_Instant_Video.csv").is_file():
        return "amazon-video"
    return None


def _load_preset(preset: Preset, folder: Path, cache_dir: str | Path | None,
                 use_cache: bool) -> Dataset:
    files = preset.files(folder)

    def build() -> Dataset:
        return preset.load(**files, name=preset.name)

    if not use_cache:
        return build()
    return load_cached(preset.name, f"preset:{preset.name}", files, build, cache_dir)


def _load_path(path: Path, cache_dir: str | Path | None, use_cache: bool) -> Dataset:
    if path.is_dir():
        preset = sniff_folder(path)
        if preset is None:
            raise DataError(f"{path}: no known dataset layout (e.g. ratings.dat, u.data, "
                            "train.txt, UserBehavior*.csv); give a preset name or a data file")
        return _load_preset(PRESETS[preset], path, cache_dir, use_cache)
    kind = sniff_file(path)
    if kind is None:
        head = first_line(path, "latin-1")[:60]
        if not head.strip():
            raise DataError(f"{path}: file is empty; give a data file with one interaction per "
                            "line (e.g. 'user::item::rating::time')")
        raise DataError(f"{path}: unrecognised format (first line '{head}'); use "
                        "fedrec.data.loaders.load_delimited with a ColumnMap")
    name = path.name.split(".")[0]

    def build() -> Dataset:
        return FILE_LOADERS[kind](path, name)

    if not use_cache:
        return build()
    return load_cached(name, f"file:{kind}", {"path": path}, build, cache_dir)


def load_dataset(
    name_or_path: str, data_root: str | Path | None = None, cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> Dataset:
    """Load a preset, a dataset folder or a data file (see module docstring).

    Parameters
    ----------
    name_or_path: preset name, or a file/folder path (absolute, or relative to the working
        folder or to the data root).
    data_root: folder holding the preset folders (default: env FEDREC_DATA, then
        ``<repo>/../shared/data``).
    cache_dir: parsed-binary cache folder (default: env FEDREC_CACHE, then ~/.cache/fedrec).
    use_cache: read and write the cache (``synthetic`` is never cached).

    Raises
    ------
    DataError: unknown name (lists the presets), missing files (names them), malformed lines.
    """
    preset = PRESETS.get(name_or_path)
    if preset is not None:
        if preset.folder is None:
            return preset.load(name=preset.name)
        folder = resolve_data_root(data_root) / preset.folder
        return _load_preset(preset, folder, cache_dir, use_cache)
    path = Path(name_or_path).expanduser()
    if not path.exists() and not path.is_absolute():
        with contextlib.suppress(DataError):  # no data root: the path is simply not found
            path = resolve_data_root(data_root) / path
    if path.exists():
        return _load_path(path, cache_dir, use_cache)
    if path.suffix or len(Path(name_or_path).parts) > 1:   # meant as a file, not a preset
        raise DataError(f"{name_or_path}: file not found (looked in the working folder and the "
                        "data root); check the path")
    raise DataError(f"unknown dataset '{name_or_path}': not a preset ({', '.join(PRESETS)}) nor "
                    "an existing file or folder")

