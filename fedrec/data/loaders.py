"""Dataset loaders: published formats in, :class:`~fedrec.data.schema.Dataset` out.

Every loader takes explicit file paths (folder conventions live in ``fedrec.data.registry``),
validates every line (``<file>:<line>: expected '<format>', got '<line>'``) and reads ``.gz``
files transparently (detected by content). Formats:

=====================  ===========================================  ===============================
loader                 format                                       notes
=====================  ===========================================  ===============================
load_ml1m (+ parts)    ``UserID::MovieID::Rating::Timestamp``       or ``ratings_chrono.dat``
                                                                    (``user::movie``, order only)
load_ml100k            ``u.data`` tab ``user item rating ts``       ``u.item``/``u.user`` features
load_taobao            csv ``user,item,category,behavior,ts``       pv -> click; buy/cart/fav kept
load_amazon            csv ``user,item,rating,ts``                  string ids -> ints, labels kept
load_user_lists        ``user item1 item2 ...`` (Steam, LightGCN)   order only, files concatenated
load_delimited         any delimited file + :class:`ColumnMap`      a new dataset needs no code
=====================  ===========================================  ===============================

String ids are mapped to ints in first-seen order; the original strings are kept in
``user_features`` / ``item_features`` as a ``label`` column indexed by the int id, so
``data.item_features.loc[item, "label"]`` gives back the source id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
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
from fedrec.data.loaders_movielens import (
    ML100K_GENRES,
    load_ml1m,
    load_ml1m_chrono,
    load_ml1m_ratings,
    load_ml100k,
    ml1m_files,
    ml100k_files,
    positions_in_history,
    read_ml1m_movies,
    read_ml1m_users,
    read_ml100k_items,
    read_ml100k_users,
)
from fedrec.data.schema import BEHAVIORS, Dataset, make_interactions
from fedrec.errors import ConfigError, DataError

__all__ = [
    "BEHAVIOR_ALIASES",
    "ML100K_GENRES",
    "ColumnMap",
    "load_amazon",
    "load_delimited",
    "load_ml1m",
    "load_ml1m_chrono",
    "load_ml1m_ratings",
    "load_ml100k",
    "load_steam",
    "load_taobao",
    "load_user_lists",
    "ml1m_files",
    "ml100k_files",
    "positions_in_history",
    "read_ml1m_movies",
    "read_ml1m_users",
    "read_ml100k_items",
    "read_ml100k_users",
]

#: Accepted behaviour values -> canonical behaviour (``schema.BEHAVIORS``).
BEHAVIOR_ALIASES: dict[str, str] = {
    "pv": "click", "click": "click", "buy": "buy", "cart": "cart", "fav": "fav",
}
_ROLES = ("user", "item", "ts", "rating", "behavior", "category")


@dataclass(frozen=True)
class ColumnMap:
    """Where each field is in a delimited file: 0-based positions, or header names.

    Attributes
    ----------
    user, item: id columns (integers kept as they are; any other text mapped to ints in
        first-seen order, originals kept as ``label`` in the feature frames).
    ts: unix-time column; None -> position in the user's history (``has_time`` False).
    rating: numeric rating column, or None (NaN).
    behavior: column of ``BEHAVIOR_ALIASES`` keys, or None ("click").
    category: item category column (ints, or text mapped to ints), or None (-1).
    sep: separator; one character, or one character repeated (``::``) for the fast path.
    header: the first line holds column names (needed to refer to columns by name).
    encoding: text encoding.
    quoted: honour CSV double quotes (needs a one-character ``sep``).
    """

    user: int | str
    item: int | str
    ts: int | str | None = None
    rating: int | str | None = None
    behavior: int | str | None = None
    category: int | str | None = None
    sep: str = ","
    header: bool = False
    encoding: str = "utf-8"
    quoted: bool = False

    def __post_init__(self) -> None:
        refs = [r for r in (getattr(self, role) for role in _ROLES) if r is not None]
        if not self.sep:
            raise ConfigError("ColumnMap.sep is empty; give the field separator, e.g. ','")
        if len(set(refs)) != len(refs):
            raise ConfigError(f"ColumnMap refers to one column twice: {refs}; give each role "
                              "its own column")
        if not self.header and any(isinstance(r, str) for r in refs):
            raise ConfigError("ColumnMap names columns but header=False; use 0-based positions "
                              "or set header=True")
        if any(isinstance(r, int) and r < 0 for r in refs):
            raise ConfigError(f"ColumnMap positions must be >= 0, got {refs}")

    def roles(self) -> dict[str, int | str]:
        """Role -> column reference, for the roles that are set."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name in _ROLES and getattr(self, f.name) is not None}


def _kind(role: str) -> str | frozenset:
    kinds: dict[str, str | frozenset] = {
        "user": "id", "item": "id", "category": "id", "ts": "float", "rating": "float",
        "behavior": frozenset(BEHAVIOR_ALIASES)}
    return kinds[role]


def _header_fields(path: Path, columns: ColumnMap) -> list[str]:
    """Field names (header) or placeholder names (no header) of a file's first line."""
    line = first_line(path, columns.encoding)
    if not line:
        raise DataError(f"{path}: empty file; expected a delimited file with "
                        f"{', '.join(columns.roles())} columns")
    return [f.strip().strip('"') for f in line.split(columns.sep)]


def _positions(path: Path, columns: ColumnMap, names: list[str]) -> dict[str, int]:
    """Role -> 0-based field position, checked against the file's first line."""
    positions = {}
    for role, ref in columns.roles().items():
        if isinstance(ref, str):
            if ref not in names:
                raise DataError(f"{path}: no column '{ref}' in header {names}; fix the "
                                "ColumnMap or the file")
            positions[role] = names.index(ref)
        elif ref >= len(names):
            raise DataError(f"{path}: {role} is column {ref} but the first line has "
                            f"{len(names)} fields; fix the ColumnMap (0-based positions)")
        else:
            positions[role] = ref
    return positions


def _ids(column: pd.Series) -> tuple[np.ndarray, np.ndarray | None]:
    """(int ids, labels or None): integer columns as they are, text in first-seen order."""
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(np.int64), None
    codes, labels = pd.factorize(column.astype(str), sort=False)
    return codes.astype(np.int64), np.asarray(labels, dtype=object)


def _labels(labels: np.ndarray | None, index_name: str) -> pd.DataFrame | None:
    if labels is None:
        return None
    return pd.DataFrame({"label": labels}, index=pd.RangeIndex(len(labels), name=index_name))


def load_delimited(
    path: Path, columns: ColumnMap, *, name: str | None = None, fmt: str | None = None,
) -> Dataset:
    """Read any delimited interaction file described by a :class:`ColumnMap`.

    Parameters
    ----------
    path: plain or gzip file.
    columns: where user, item and the optional fields are.
    name: dataset name (default: the file stem).
    fmt: the expected line format quoted in errors (default: roles joined by ``sep``).
    """
    require_file(path, f"a delimited file with {', '.join(columns.roles())} columns")
    names = _header_fields(path, columns)
    where = _positions(path, columns, names)
    role_at = {i: role for role, i in where.items()}
    fmt = fmt or (columns.sep.join(role_at.get(i, "*") for i in range(len(names))))
    frame = read_fields(path, sep=columns.sep, n_fields=len(names), fmt=fmt,
                        kinds={i: _kind(role) for role, i in where.items()},
                        header=columns.header, encoding=columns.encoding, quoted=columns.quoted)
    col = {role: frame[i] for role, i in where.items()}
    user, user_labels = _ids(col["user"])
    item, item_labels = _ids(col["item"])
    has_time = "ts" in col
    table = make_interactions(
        user, item,
        col["ts"].to_numpy().astype(np.int64) if has_time else positions_in_history(user),
        rating=col["rating"].to_numpy() if "rating" in col else None,
        behavior=(pd.Categorical(col["behavior"].map(BEHAVIOR_ALIASES), categories=BEHAVIORS)
                  if "behavior" in col else clicks(len(user))),
        category=_ids(col["category"])[0] if "category" in col else None,
    )
    return Dataset(name or Path(path).name.split(".")[0], table, has_time,
                   user_features=_labels(user_labels, "user"),
                   item_features=_labels(item_labels, "item"), source=(str(path),))


TAOBAO_COLUMNS = ColumnMap(user=0, item=1, category=2, behavior=3, ts=4)
AMAZON_COLUMNS = ColumnMap(user=0, item=1, rating=2, ts=3)


def load_taobao(path: Path, *, name: str = "taobao") -> Dataset:
    """Tianchi UserBehavior csv (no header): ``user,item,category,behavior,ts``.

    ``pv`` (page view) becomes "click"; ``buy``/``cart``/``fav`` are kept (transactional in
    C3DRec). Any other behaviour value is a malformed line. ``ts`` is unix seconds.
    """
    return load_delimited(path, TAOBAO_COLUMNS, name=name, fmt="user,item,category,behavior,ts")


def load_amazon(path: Path, *, name: str = "amazon") -> Dataset:
    """Amazon ratings csv (no header): ``user,item,rating,ts`` (McAuley's ``ratings_*.csv``).

    Reviewer and ASIN strings become ints in first-seen order; ``user_features`` and
    ``item_features`` hold the original strings in a ``label`` column.
    """
    return load_delimited(path, AMAZON_COLUMNS, name=name, fmt="user,item,rating,ts")


def _read_user_lists(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) arrays of one ``user item1 item2 ...`` file, in file order."""
    users, items = [], []
    with reading(path), open_text(require_file(path, "lines 'user item1 item2 ...'")) as handle:
        for number, line in enumerate(handle, start=1):
            tokens = line.split()
            if not tokens:
                continue
            try:
                ids = np.array(tokens, dtype=np.int64)
            except (ValueError, OverflowError):
                raise DataError(f"{path}:{number}: expected 'user item1 item2 ...' (integers), "
                                f"got '{line.rstrip()[:60]}'") from None
            users.append(np.full(len(ids) - 1, ids[0], np.int64))
            items.append(ids[1:])
    if not users:
        raise DataError(f"{path}: no data lines; expected lines like 'user item1 item2 ...'")
    return np.concatenate(users), np.concatenate(items)


def load_user_lists(paths: Sequence[Path], *, name: str = "steam") -> Dataset:
    """Steam / LightGCN style files: one line per user, ``user item1 item2 ...``.

    Several files are concatenated per user in the order given (e.g. ``train.txt`` then
    ``test.txt``, so the test item comes last). No time: ``ts`` is the position in the
    concatenated history and ``has_time`` is False.
    """
    parts = [_read_user_lists(Path(p)) for p in paths]
    user = np.concatenate([u for u, _ in parts])  # (n_rows,), file order then line order
    item = np.concatenate([i for _, i in parts])
    table = make_interactions(user, item, positions_in_history(user), behavior=clicks(len(user)))
    return Dataset(name, table, has_time=False, source=tuple(str(p) for p in paths))


def load_steam(train: Path, test: Path, *, name: str = "steam") -> Dataset:
    """Steam as in FedRecAttack: ``train.txt`` then ``test.txt`` per user (test item last)."""
    return load_user_lists([train, test], name=name)
