"""The one interaction table every loader produces, and its side tables.

Columns of ``Dataset.interactions`` (a pandas DataFrame, one row per event):

==========  =========  ==============================================================
column      dtype      meaning
==========  =========  ==============================================================
user        int64      raw user id as in the source (string ids are mapped to ints by the
                       loader in first-seen order; the original strings are the ``label``
                       column of ``user_features``, indexed by the int id)
item        int64      raw item id, same rule (``item_features["label"]``)
ts          int64      unix seconds; when the source has no time, the 0-based position
                       of the event in the user's history (``Dataset.has_time`` False)
rating      float32    explicit rating, NaN where the source has none
behavior    category   one of BEHAVIORS; sources without behaviour types use "click"
category    int64      item category, -1 where unknown
==========  =========  ==============================================================

Rows are sorted by (user, ts, original file order), so each user's history is in order.
Contiguous 0-based ids for training are made by ``fedrec.data.splits`` (reversible maps).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

COLUMNS: tuple[str, ...] = ("user", "item", "ts", "rating", "behavior", "category")
BEHAVIORS: tuple[str, ...] = ("click", "buy", "cart", "fav")
#: Behaviours that C3DRec treats as transactional (may be uploaded to the cloud).
TRANSACTIONAL: frozenset[str] = frozenset({"buy", "cart", "fav"})


@dataclass(frozen=True)
class Dataset:
    """An interaction table plus optional side features.

    Attributes
    ----------
    name: preset name or file stem.
    interactions: DataFrame with exactly ``COLUMNS`` (see module docstring).
    has_time: True when ``ts`` is a real unix time, False when it is a position.
    user_features: indexed by raw user id (e.g. gender/age/occupation), or None.
    item_features: indexed by raw item id (e.g. title/genres), or None.
    source: the file(s) it was read from, for provenance in run outputs.
    """

    name: str
    interactions: pd.DataFrame
    has_time: bool
    user_features: pd.DataFrame | None = None
    item_features: pd.DataFrame | None = None
    source: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_users(self) -> int:
        return int(self.interactions["user"].nunique())

    @property
    def n_items(self) -> int:
        return int(self.interactions["item"].nunique())

    def __len__(self) -> int:
        return len(self.interactions)


def make_interactions(
    user: np.ndarray,
    item: np.ndarray,
    ts: np.ndarray,
    rating: np.ndarray | None = None,
    behavior: np.ndarray | None = None,
    category: np.ndarray | None = None,
) -> pd.DataFrame:
    """Build a table in the canonical schema, sorted by (user, ts) with a stable sort."""
    n = len(user)
    frame = pd.DataFrame(
        {
            "user": np.asarray(user, dtype=np.int64),
            "item": np.asarray(item, dtype=np.int64),
            "ts": np.asarray(ts, dtype=np.int64),
            "rating": (np.full(n, np.nan, np.float32) if rating is None
                       else np.asarray(rating, dtype=np.float32)),
            "behavior": (
                pd.Categorical.from_codes(np.zeros(n, np.int8), categories=BEHAVIORS)  # all click
                if behavior is None else pd.Categorical(behavior, categories=BEHAVIORS)
            ),
            "category": (np.full(n, -1, np.int64) if category is None
                         else np.asarray(category, dtype=np.int64)),
        }
    )
    return frame.sort_values(["user", "ts"], kind="stable").reset_index(drop=True)
