"""MovieLens loaders: ML-1M and ML-100K in the original GroupLens formats.

ML-1M (https://grouplens.org/datasets/movielens/1m/, ``ml-1m.zip``):

- ``ratings.dat``  ``UserID::MovieID::Rating::Timestamp`` (a ``.gz`` copy is read transparently);
- ``ratings_chrono.dat``  ``UserID::MovieID``, each user's ratings in chronological order, no
  rating or time (the form shared in ``../shared/data``): ``ts`` is then the 0-based position in
  the user's history and ``has_time`` is False;
- ``users.dat``  ``UserID::Gender::Age::Occupation::Zip-code``;
- ``movies.dat``  ``MovieID::Title::Genres`` (latin-1, genres ``|``-separated).

ML-100K (https://grouplens.org/datasets/movielens/100k/, ``ml-100k.zip``): ``u.data`` (tab,
``user item rating ts``), ``u.item`` (latin-1, ``|``, 5 fields then 19 genre flags), ``u.user``
(``id|age|gender|occupation|zip``).

Item ``category`` is left -1 (movies have several genres); the genres are in ``item_features``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedrec.data.loaders_io import (
    clicks,
    first_line,
    open_text,
    read_fields,
    reading,
    require_file,
)
from fedrec.data.schema import Dataset, make_interactions
from fedrec.errors import DataError

ML1M_URL = "https://grouplens.org/datasets/movielens/1m/"
ML100K_URL = "https://grouplens.org/datasets/movielens/100k/"
ML1M_RATINGS_FMT = "UserID::MovieID::Rating::Timestamp"
ML1M_CHRONO_FMT = "UserID::MovieID"
#: The 19 genre flags of ``u.item``, in file order (``u.genre``).
ML100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)


def load_ml1m_ratings(path: Path, *, name: str = "ml-1m") -> Dataset:
    """Read an original ``ratings.dat`` (or a gzip copy): real unix times and ratings.

    Returns
    -------
    Dataset with ``has_time`` True, ``rating`` 1..5, behaviour "click".
    """
    frame = read_fields(path, sep="::", n_fields=4, fmt=ML1M_RATINGS_FMT,
                        kinds={0: "int", 1: "int", 2: "float", 3: "int"})
    table = make_interactions(frame[0].to_numpy(), frame[1].to_numpy(), frame[3].to_numpy(),
                              rating=frame[2].to_numpy(), behavior=clicks(len(frame)))
    return Dataset(name, table, has_time=True, source=(str(path),))


def positions_in_history(user: np.ndarray) -> np.ndarray:
    """0-based position of each row within its user's rows, in file order.

    >>> positions_in_history(np.array([7, 7, 3, 7, 3])).tolist()
    [0, 1, 0, 2, 1]
    """
    return pd.Series(user).groupby(user, sort=False).cumcount().to_numpy(np.int64)


def load_ml1m_chrono(path: Path, *, name: str = "ml-1m") -> Dataset:
    """Read ``ratings_chrono.dat`` (``user::movie`` in per-user chronological order).

    ``ts`` is the position in the user's history (0 = oldest); ``has_time`` is False and
    ``rating`` is NaN because the file carries neither.
    """
    frame = read_fields(path, sep="::", n_fields=2, fmt=ML1M_CHRONO_FMT,
                        kinds={0: "int", 1: "int"})
    user = frame[0].to_numpy()
    table = make_interactions(user, frame[1].to_numpy(), positions_in_history(user),
                              behavior=clicks(len(user)))
    return Dataset(name, table, has_time=False, source=(str(path),))


def read_ml1m_users(path: Path) -> pd.DataFrame:
    """``users.dat`` -> DataFrame indexed by ``user`` with gender, age, occupation, zip."""
    frame = read_fields(path, sep="::", n_fields=5, encoding="latin-1",
                        fmt="UserID::Gender::Age::Occupation::Zip-code",
                        kinds={0: "int", 1: frozenset({"F", "M"}), 2: "int", 3: "int", 4: "str"})
    return pd.DataFrame(
        {"gender": pd.Categorical(frame[1], categories=["F", "M"]),
         "age": frame[2].to_numpy(np.int64), "occupation": frame[3].to_numpy(np.int64),
         "zip": frame[4].astype(str).to_numpy()},
        index=pd.Index(frame[0].to_numpy(np.int64), name="user"),
    )


def read_ml1m_movies(path: Path) -> pd.DataFrame:
    """``movies.dat`` (latin-1) -> DataFrame indexed by ``item`` with title and genres (tuple).

    Titles contain ``:`` (``Star Wars: Episode IV ...``), so this small file is split in Python.
    """
    fmt = "MovieID::Title::Genres"
    ids, titles, genres = [], [], []
    with reading(path), open_text(path, "latin-1") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("::")
            if len(fields) != 3 or not fields[0].strip().isdigit():
                raise DataError(f"{path}:{number}: expected '{fmt}', got '{line[:60]}'")
            ids.append(int(fields[0]))
            titles.append(fields[1])
            genres.append(tuple(g for g in fields[2].split("|") if g))
    return pd.DataFrame({"title": titles, "genres": genres},
                        index=pd.Index(np.asarray(ids, np.int64), name="item"))


def ml1m_files(folder: Path) -> dict[str, Path]:
    """Files of an ML-1M folder: ``ratings`` (required), ``users``/``movies`` when present.

    ``ratings`` is ``ratings.dat`` (or ``ratings.dat.gz``) when present, because it has real
    times and ratings; otherwise the shared ``ratings_chrono.dat`` (order only).
    """
    for name in ("ratings.dat", "ratings.dat.gz", "ratings_chrono.dat"):
        if (folder / name).is_file():
            files = {"ratings": folder / name}
            break
    else:
        raise DataError(
            f"ml-1m: no ratings.dat or ratings_chrono.dat in {folder}; download ml-1m.zip from "
            f"{ML1M_URL} and unzip it there, or pass --set data-root=<folder>")
    for role, name in (("users", "users.dat"), ("movies", "movies.dat")):
        if (folder / name).is_file():
            files[role] = folder / name
    return files


def load_ml1m(
    ratings: Path, users: Path | None = None, movies: Path | None = None, *, name: str = "ml-1m",
) -> Dataset:
    """ML-1M from its files (see :func:`ml1m_files`), with side features when given.

    The ratings file is recognised by its first line: four ``::`` fields -> original
    ``ratings.dat`` (times and ratings); two -> ``ratings_chrono.dat`` (order only).
    """
    n_fields = len(first_line(require_file(ratings, "ratings.dat")).split("::"))
    if n_fields == 2:
        data = load_ml1m_chrono(ratings, name=name)
    else:
        data = load_ml1m_ratings(ratings, name=name)
    return Dataset(
        name, data.interactions, data.has_time,
        user_features=None if users is None else read_ml1m_users(users),
        item_features=None if movies is None else read_ml1m_movies(movies),
        source=tuple(str(p) for p in (ratings, users, movies) if p is not None),
    )


def ml100k_files(folder: Path) -> dict[str, Path]:
    """Files of an ML-100K folder: ``data`` = ``u.data`` (required), ``items``/``users``."""
    if not (folder / "u.data").is_file():
        raise DataError(
            f"ml-100k: no u.data in {folder}; download ml-100k.zip from {ML100K_URL} and unzip "
            f"it there, or pass --set data-root=<folder>")
    files = {"data": folder / "u.data"}
    for role, name in (("items", "u.item"), ("users", "u.user")):
        if (folder / name).is_file():
            files[role] = folder / name
    return files


def read_ml100k_items(path: Path) -> pd.DataFrame:
    """``u.item`` (latin-1) -> DataFrame indexed by ``item``: title and genres (tuple)."""
    kinds = {0: "int", 1: "str"} | {5 + g: "int" for g in range(len(ML100K_GENRES))}
    frame = read_fields(path, sep="|", n_fields=24, kinds=kinds,
                        fmt="movie id|title|release date|video release date|IMDb URL|19 flags",
                        encoding="latin-1")
    flags = frame[[5 + g for g in range(len(ML100K_GENRES))]].to_numpy(bool)  # (n_items, 19)
    genres = [tuple(np.asarray(ML100K_GENRES)[row].tolist()) for row in flags]
    return pd.DataFrame(
        {"title": frame[1].astype(str).to_numpy(), "genres": genres},
        index=pd.Index(frame[0].to_numpy(np.int64), name="item"),
    )


def read_ml100k_users(path: Path) -> pd.DataFrame:
    """``u.user`` -> DataFrame indexed by ``user``: age, gender, occupation, zip."""
    frame = read_fields(path, sep="|", n_fields=5, fmt="user id|age|gender|occupation|zip code",
                        kinds={0: "int", 1: "int", 2: frozenset({"F", "M"}), 3: "str", 4: "str"},
                        encoding="latin-1")
    return pd.DataFrame(
        {"age": frame[1].to_numpy(np.int64),
         "gender": pd.Categorical(frame[2], categories=["F", "M"]),
         "occupation": frame[3].astype(str).to_numpy(), "zip": frame[4].astype(str).to_numpy()},
        index=pd.Index(frame[0].to_numpy(np.int64), name="user"),
    )


def load_ml100k(
    data: Path, items: Path | None = None, users: Path | None = None, *, name: str = "ml-100k",
) -> Dataset:
    """ML-100K from ``u.data`` (tab: ``user item rating ts``) and optional side files."""
    frame = read_fields(data, sep="\t", n_fields=4, fmt="user id\\titem id\\trating\\ttimestamp",
                        kinds={0: "int", 1: "int", 2: "float", 3: "int"})
    table = make_interactions(frame[0].to_numpy(), frame[1].to_numpy(), frame[3].to_numpy(),
                              rating=frame[2].to_numpy(), behavior=clicks(len(frame)))
    return Dataset(
        name, table, has_time=True,
        user_features=None if users is None else read_ml100k_users(users),
        item_features=None if items is None else read_ml100k_items(items),
        source=tuple(str(p) for p in (data, items, users) if p is not None),
    )
