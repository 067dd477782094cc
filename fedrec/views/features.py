"""Side features in contiguous id spaces: item category / genres, user profile.

Which preset has what (the loaders' output, ``fedrec.data``):

============== ===================== ====================== ==============================
preset         item category         item genres            user profile
============== ===================== ====================== ==============================
ml-1m          -                     ``movies.dat`` (18)    ``users.dat`` gender/age/occ.
ml-100k        -                     ``u.item`` (19)        ``u.user`` gender/age/occ.
taobao         per row (category)    -                      -
synthetic      per row (category)    -                      - (its user table is ground truth)
amazon, steam  -                     -                      -
============== ===================== ====================== ==============================

Codes are contiguous ints in sorted raw order; -1 marks unknown / padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedrec.data.splits import IdMap

#: profile columns read from ``Dataset.user_features`` when present, in this order
PROFILE_COLUMNS: tuple[str, ...] = ("gender", "age", "occupation")
#: ML-1M's age groups (1, 18, 25, 35, 45, 50, 56); ML-100K's ages are bucketed the same way
AGE_EDGES = np.array([18, 25, 35, 45, 50, 56])


@dataclass(frozen=True, eq=False)
class ItemSide:
    """The item catalogue's side features (public: devices and cloud may both read them).

    category: int64 [I] contiguous category code, -1 unknown.
    genres: int32 [I, G] genre codes, padded with -1 (G = 0 when the data has none).
    category_labels / genre_labels: raw value of each code.
    """

    category: np.ndarray
    genres: np.ndarray
    category_labels: np.ndarray
    genre_labels: tuple[str, ...]

    @property
    def n_categories(self) -> int:
        return len(self.category_labels)

    @property
    def n_genres(self) -> int:
        return len(self.genre_labels)


@dataclass(frozen=True, eq=False)
class Profiles:
    """User profile codes [U, P] (-1 unknown) with column names and sizes [P]."""

    codes: np.ndarray
    names: tuple[str, ...]
    sizes: np.ndarray


def item_side(item: np.ndarray, category: np.ndarray, items: IdMap,
              item_features: pd.DataFrame | None) -> ItemSide:
    """Side features of the contiguous items from the rows (``item`` contiguous ids,
    ``category`` raw per row) and the loader's item table (``genres`` column if any)."""
    first = np.unique(item, return_index=True)[1]                         # [I] first row each
    raw = np.full(len(items), -1, np.int64)
    raw[item[first]] = category[first]
    labels, codes = np.unique(raw[raw >= 0], return_inverse=True)
    cat = np.full(len(items), -1, np.int64)
    cat[raw >= 0] = codes
    genres, names = _genres(items, item_features)
    return ItemSide(cat, genres, labels, names)


def _genres(items: IdMap, table: pd.DataFrame | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Padded genre codes [I, G] and the genre names."""
    if table is None or "genres" not in table.columns:
        return np.full((len(items), 0), -1, np.int32), ()
    per_item = table["genres"].reindex(items.labels)                      # [I] tuples or NaN
    flat = per_item.explode().dropna()                                    # one row per genre
    names = tuple(sorted(set(flat.astype(str))))
    row = np.searchsorted(items.labels, flat.index.to_numpy())
    col = flat.groupby(level=0).cumcount().to_numpy()
    out = np.full((len(items), int(col.max(initial=-1)) + 1), -1, np.int32)
    out[row, col] = np.searchsorted(np.array(names), flat.astype(str).to_numpy())
    return out, names


def profiles(users: IdMap, table: pd.DataFrame | None) -> Profiles | None:
    """Profile codes of the contiguous users, or None when the data has no profile."""
    if table is None:
        return None
    names = tuple(c for c in PROFILE_COLUMNS if c in table.columns)
    if not names:
        return None
    rows = table.reindex(users.labels)                                    # [U], NaN if absent
    pairs = [_codes(c, rows[c], table[c]) for c in names]
    codes = np.stack([p[0] for p in pairs], axis=1)                       # [U, P]
    return Profiles(codes, names, np.array([p[1] for p in pairs], np.int64))


def _codes(name: str, column: pd.Series, vocab: pd.Series) -> tuple[np.ndarray, int]:
    """Codes of ``column`` (-1 where absent) over the whole table's values, and their count."""
    known = column.notna().to_numpy()
    out = np.full(len(column), -1, np.int64)
    if name == "age":
        out[known] = np.searchsorted(AGE_EDGES, column[known].to_numpy(np.int64), side="right")
        return out, len(AGE_EDGES) + 1
    numeric = pd.api.types.is_numeric_dtype(vocab.dtype)
    values = vocab.dropna().to_numpy() if numeric else vocab.dropna().astype(str).to_numpy()
    labels = np.unique(values)
    mine = column[known].to_numpy() if numeric else column[known].astype(str).to_numpy()
    out[known] = np.searchsorted(labels, mine)
    return out, len(labels)
