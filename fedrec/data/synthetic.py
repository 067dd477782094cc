"""Seeded synthetic interaction data with a planted, documented personal signal.

The embedded default dataset: no download, any size from ``tiny`` (tests) to ``ml-1m``
(6,040 users x 3,706 items, ~1.0M rows), and a ground truth that protocols can be checked
against. Everything is drawn from one ``numpy.random.Generator(seed)`` in a fixed order,
so the same ``SyntheticConfig`` always gives the identical table.

What is generated (raw ids are 1-based: users ``1..n_users``, items ``1..n_items``)
---------------------------------------------------------------------------------
* **Items**: each item has a category (round-robin over ``n_categories`` then shuffled, so
  every category is non-empty) and a Zipf popularity ``pop[i] ~ (rank_i + 1) ** -zipf``
  (rank is a random permutation, independent of category): a long tail.
* **Groups**: each of ``n_groups`` latent interest groups prefers ``group_categories``
  random categories. Users join a group uniformly at random.
* **Personal item set** ``P_u`` (the planted signal): ``personal_size`` items drawn
  uniformly, without replacement, from the items *outside* the user's group categories.
  It is private to the user: not shared with the group and unrelated to popularity.
* **Activity and time**: ``n_u = min_interactions + Geometric - 1`` rows (mean
  ``mean_interactions``). A fraction ``new_user_frac`` of users are *new*: they arrive at a
  time uniform in the first half of ``[t_gdpr, t_end)`` and have no row before ``t_gdpr``
  (C3DRec's new users); the others are active from ``t_start``. Rows come in sessions
  (a new session starts with probability ``1 / session_length`` per row) whose start is
  uniform over the user's active window; clicks inside a session are ``Exponential(click_gap)``
  seconds apart (far below the 706 s idle gap), so ``splits.sessionize`` recovers them.
  Timestamps are integer seconds in ``[t_start, t_end)``.
* **Item of each row**: a three-way mixture whose personal weight drifts upward after the
  GDPR deadline::

      w(t) = personal_strength + drift * clip((t - t_gdpr) / (t_end - t_gdpr), 0, 1)

      P(personal) = w(t)                          uniform over P_u
      P(group)    = (1 - w(t)) * group_strength   popularity-weighted within a group category
      P(popular)  = (1 - w(t)) * (1 - group_strength)   global Zipf popularity

* **Behaviour**: each row is independently ``buy`` / ``cart`` / ``fav`` with probabilities
  ``buy_prob`` / ``cart_prob`` / ``fav_prob`` (the transactional subset C3DRec may upload),
  else ``click``; independent of the item, so transactional rows carry no extra signal.
* **Rating** (1..5): 4 for personal, 3 for group, 2 for popular rows, plus noise in
  {-1, 0, +1} with probabilities 0.2 / 0.6 / 0.2.

Why a single global model cannot fully capture it
-------------------------------------------------
Before the deadline only ``personal_strength`` of a user's rows hit ``P_u``; after it the
share rises linearly to ``personal_strength + drift``. A global model trained on
pre-deadline rows sees each old user's ``P_u`` rarely and new users' ``P_u`` never, and
``P_u`` lies outside the group's categories and ignores popularity, so neither the group
nor the crowd predicts it. A model fine-tuned on a user's own post-deadline rows (on the
device) can learn it. Ground truth: ``personal_items``, ``personal_mask``,
``personal_weight``, and ``user_features`` (group, group categories, is_new, arrival,
personal_items) / ``item_features`` (category, popularity, pop_rank).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from fedrec.data.schema import BEHAVIORS, Dataset, make_interactions
from fedrec.errors import ConfigError

#: 2017-11-25 / 12-01 / 12-03 / 12-04 00:00 China time (UTC+8): C3DRec's Taobao period,
#: with its T_device = 1512057600 and T_test = 1512230400.
_T_START, _T_GDPR, _T_TEST, _T_END = 1511539200, 1512057600, 1512230400, 1512316800


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the generator (see the module docstring for the model).

    Probabilities are in [0, 1]; times are unix seconds with
    ``t_start < t_gdpr < t_test < t_end``. ``t_test`` is not used for generation: it is
    the suggested test cutoff (C3DRec's T_test) to pass to ``splits.time_cutoff_split``.
    """

    seed: int = 0
    n_users: int = 200
    n_items: int = 500
    n_groups: int = 5
    n_categories: int = 20
    group_categories: int = 3       # categories each group prefers
    mean_interactions: float = 50.0  # rows per user, on average
    min_interactions: int = 5       # rows per user, at least
    zipf: float = 1.0               # item popularity exponent (0 = uniform)
    group_strength: float = 0.6     # share of non-personal rows drawn from group categories
    personal_size: int = 20         # |P_u|
    personal_strength: float = 0.1  # personal share before t_gdpr
    drift: float = 0.5              # extra personal share reached at t_end
    new_user_frac: float = 0.1      # users who only appear after t_gdpr
    buy_prob: float = 0.02
    cart_prob: float = 0.05
    fav_prob: float = 0.03
    session_length: float = 8.0     # mean rows per session
    click_gap: float = 60.0         # mean seconds between clicks in a session
    t_start: int = _T_START
    t_gdpr: int = _T_GDPR
    t_test: int = _T_TEST
    t_end: int = _T_END

    def __post_init__(self) -> None:
        for name, value in _check(self):
            raise ConfigError(f"SyntheticConfig.{name}: {value}")


def _check(c: SyntheticConfig) -> list[tuple[str, str]]:
    """Return (field, 'problem; fix') pairs for every impossible value, in field order."""
    bad: list[tuple[str, str]] = []
    for f in ("n_users", "n_groups", "n_categories", "group_categories", "personal_size",
              "min_interactions"):
        if getattr(c, f) < 1:
            bad.append((f, f"must be >= 1, got {getattr(c, f)}; set a positive value"))
    for f in ("group_strength", "personal_strength", "drift", "new_user_frac", "buy_prob",
              "cart_prob", "fav_prob"):
        if not 0.0 <= getattr(c, f) <= 1.0:
            bad.append((f, f"must be in [0, 1], got {getattr(c, f)}; use a probability"))
    if c.n_items < c.n_categories:
        bad.append(("n_items", (f"{c.n_items} < n_categories={c.n_categories}; "
                                "every category needs an item, lower n_categories")))
    if c.group_categories >= c.n_categories:
        bad.append(("group_categories", (f"{c.group_categories} >= n_categories="
                    f"{c.n_categories}; personal items need categories outside the group's")))
    outside = c.n_items - c.group_categories * math.ceil(c.n_items / max(c.n_categories, 1))
    if c.personal_size > outside:
        bad.append(("personal_size", (f"{c.personal_size} > {outside} items outside a group's "
                    "categories; lower personal_size or group_categories")))
    if c.personal_strength + c.drift > 1.0:
        bad.append(("drift", (f"personal_strength + drift = "
                    f"{c.personal_strength + c.drift} > 1; lower one of them")))
    if c.buy_prob + c.cart_prob + c.fav_prob > 1.0:
        bad.append(("buy_prob", "buy_prob + cart_prob + fav_prob > 1; lower them"))
    if c.mean_interactions < c.min_interactions:
        bad.append(("mean_interactions", (f"{c.mean_interactions} < min_interactions="
                    f"{c.min_interactions}; raise mean_interactions")))
    for f, ok, need in (("zipf", c.zipf >= 0, ">= 0"), ("click_gap", c.click_gap > 0, "> 0"),
                        ("session_length", c.session_length >= 1, ">= 1")):
        if not ok:
            bad.append((f, f"must be {need}, got {getattr(c, f)}; change it"))
    if not c.t_start < c.t_gdpr < c.t_test < c.t_end:
        bad.append(("t_gdpr", (f"need t_start < t_gdpr < t_test < t_end, got {c.t_start}, "
                    f"{c.t_gdpr}, {c.t_test}, {c.t_end}; reorder the times")))
    return bad


#: Named sizes. ``ml-1m`` matches MovieLens-1M's shape (6,040 x 3,706, ~1.0M rows, >= 20 each).
SIZES: MappingProxyType[str, SyntheticConfig] = MappingProxyType({
    "tiny": SyntheticConfig(n_users=30, n_items=60, n_groups=3, n_categories=6,
                            group_categories=2, personal_size=5, mean_interactions=20.0),
    "small": SyntheticConfig(n_users=1000, n_items=1000, n_groups=8, n_categories=25,
                             mean_interactions=60.0),
    "ml-1m": SyntheticConfig(n_users=6040, n_items=3706, n_groups=18, n_categories=18 * 3,
                             mean_interactions=165.6, min_interactions=20),
})


def preset(name: str, **overrides: Any) -> SyntheticConfig:
    """Return ``SIZES[name]`` with ``overrides`` applied (e.g. ``seed=3``), validated."""
    if name not in SIZES:
        raise ConfigError(f"unknown synthetic size {name!r}; valid sizes: {', '.join(SIZES)}")
    known = {f.name for f in fields(SyntheticConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown SyntheticConfig fields {unknown}; valid: {sorted(known)}")
    return replace(SIZES[name], **overrides)


def personal_weight(cfg: SyntheticConfig, ts: np.ndarray) -> np.ndarray:
    """Probability ``w(t)`` that a row at time ``ts`` (unix s) comes from the personal set."""
    ramp = np.clip((np.asarray(ts, np.float64) - cfg.t_gdpr) / (cfg.t_end - cfg.t_gdpr), 0, 1)
    return cfg.personal_strength + cfg.drift * ramp


def generate(cfg: SyntheticConfig) -> Dataset:
    """Generate the dataset described in the module docstring (``has_time=True``)."""
    rng = np.random.default_rng(cfg.seed)
    cat, pop = _items(cfg, rng)                                   # (I,), (I,)
    gcats = np.stack([rng.choice(cfg.n_categories, cfg.group_categories, replace=False)
                      for _ in range(cfg.n_groups)])              # (G, C_g)
    group = rng.integers(cfg.n_groups, size=cfg.n_users)          # (U,)
    pset = _personal_sets(cfg, rng, cat, gcats, group)            # (U, K) 0-based items
    is_new = rng.random(cfg.n_users) < cfg.new_user_frac          # (U,)
    half = (cfg.t_end - cfg.t_gdpr) / 2
    arrival = np.where(is_new, cfg.t_gdpr + rng.random(cfg.n_users) * half, cfg.t_start)
    user, ts = _times(cfg, rng, arrival)                          # (N,), (N,)
    item, source = _items_of_rows(cfg, rng, user, ts, cat, pop, gcats[group], pset)
    behavior = _behaviors(cfg, rng, len(user))
    noise = rng.choice(np.array([-1, 0, 1]), size=len(user), p=[0.2, 0.6, 0.2])
    rating = np.array([2, 3, 4])[source] + noise                 # 1..5
    frame = make_interactions(user + 1, item + 1, ts, rating, behavior, cat[item])
    users = pd.DataFrame({
        "group": group, "group_categories": [tuple(gcats[g]) for g in group],
        "is_new": is_new, "arrival": arrival.astype(np.int64),
        "personal_items": list(np.sort(pset, axis=1) + 1),
    }, index=pd.Index(np.arange(1, cfg.n_users + 1), name="user"))
    rank = np.argsort(np.argsort(-pop, kind="stable"), kind="stable")
    items = pd.DataFrame({"category": cat, "popularity": pop, "pop_rank": rank},
                         index=pd.Index(np.arange(1, cfg.n_items + 1), name="item"))
    return Dataset("synthetic", frame, True, users, items, (f"synthetic:seed={cfg.seed}",))


def _items(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Item categories (every category non-empty) and Zipf popularity summing to 1."""
    cat = rng.permutation(np.arange(cfg.n_items) % cfg.n_categories)
    rank = rng.permutation(cfg.n_items)
    pop = (rank + 1.0) ** -cfg.zipf
    return cat.astype(np.int64), pop / pop.sum()


def _personal_sets(cfg: SyntheticConfig, rng: np.random.Generator, cat: np.ndarray,
                   gcats: np.ndarray, group: np.ndarray) -> np.ndarray:
    """(U, K) personal items per user, drawn from items outside the group's categories."""
    outside = [np.flatnonzero(~np.isin(cat, gc)) for gc in gcats]
    return np.stack([rng.choice(outside[g], cfg.personal_size, replace=False) for g in group])


def _times(cfg: SyntheticConfig, rng: np.random.Generator,
           arrival: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row owners (0-based) and integer timestamps, grouped in sessions."""
    p = 1.0 / (cfg.mean_interactions - cfg.min_interactions + 1.0)
    counts = cfg.min_interactions - 1 + rng.geometric(p, size=cfg.n_users)   # (U,)
    user = np.repeat(np.arange(cfg.n_users), counts)                         # (N,)
    n = len(user)
    first = np.r_[True, user[1:] != user[:-1]]
    starts = first | (rng.random(n) < 1.0 / cfg.session_length)              # (N,)
    session = np.cumsum(starts) - 1                                          # (N,)
    owner = user[starts]                                                     # (S,)
    begin = arrival[owner] + rng.random(len(owner)) * (cfg.t_end - arrival[owner])
    gaps = rng.exponential(cfg.click_gap, size=n)
    gaps[starts] = 0.0
    elapsed = np.cumsum(gaps)
    offset = elapsed - elapsed[starts][session]                # seconds since session start
    ts = np.floor(begin[session] + offset).astype(np.int64)
    return user, np.clip(ts, cfg.t_start, cfg.t_end - 1)


def _items_of_rows(cfg: SyntheticConfig, rng: np.random.Generator, user: np.ndarray,
                   ts: np.ndarray, cat: np.ndarray, pop: np.ndarray, user_gcats: np.ndarray,
                   pset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Item per row and its source (0 popular, 1 group, 2 personal) from the mixture."""
    w = personal_weight(cfg, ts)                                             # (N,)
    r = rng.random(len(user))
    source = np.where(r < w, 2, np.where(r < w + (1 - w) * cfg.group_strength, 1, 0))
    item = np.empty(len(user), np.int64)
    m = source == 0
    item[m] = rng.choice(cfg.n_items, size=int(m.sum()), p=pop)
    m = source == 2
    item[m] = pset[user[m], rng.integers(cfg.personal_size, size=int(m.sum()))]
    m = source == 1
    want = user_gcats[user[m], rng.integers(cfg.group_categories, size=int(m.sum()))]
    item[m] = _sample_in_category(rng, want, cat, pop)
    return item, source


def _sample_in_category(rng: np.random.Generator, want: np.ndarray, cat: np.ndarray,
                        pop: np.ndarray) -> np.ndarray:
    """One popularity-weighted item of category ``want[j]`` per j, by inverse CDF."""
    order = np.argsort(cat, kind="stable")                  # items grouped by category
    cdf = np.cumsum(pop[order])                             # (I,)
    end = np.searchsorted(cat[order], np.arange(cat.max() + 1), side="right")  # (C,)
    begin = np.r_[0, end[:-1]]
    lo = np.where(begin > 0, cdf[begin - 1], 0.0)[want]
    hi = cdf[end - 1][want]
    pos = np.searchsorted(cdf, lo + rng.random(len(want)) * (hi - lo), side="right")
    return order[np.clip(pos, begin[want], end[want] - 1)]  # guard float round-off at edges


def _behaviors(cfg: SyntheticConfig, rng: np.random.Generator, n: int) -> pd.Categorical:
    """Behaviour per row: buy/cart/fav with their probabilities, else click."""
    probs = {"click": 1.0 - cfg.buy_prob - cfg.cart_prob - cfg.fav_prob,
             "buy": cfg.buy_prob, "cart": cfg.cart_prob, "fav": cfg.fav_prob}
    codes = rng.choice(len(BEHAVIORS), size=n, p=[probs[b] for b in BEHAVIORS])
    return pd.Categorical.from_codes(codes, categories=BEHAVIORS)  # fast path in schema


def personal_items(dataset: Dataset) -> dict[int, np.ndarray]:
    """Ground truth: raw user id -> sorted raw item ids of the user's personal set."""
    feats = _features(dataset)
    return {int(u): np.asarray(p) for u, p in zip(feats.index, feats["personal_items"])}


def personal_mask(dataset: Dataset) -> np.ndarray:
    """Bool per interaction row: is the row's item in its user's personal set?"""
    feats = _features(dataset)
    k = len(feats["personal_items"].iloc[0])
    scale = int(max(dataset.interactions["item"].max(), np.max(np.stack(
        feats["personal_items"].to_numpy())))) + 1
    truth = np.repeat(feats.index.to_numpy(np.int64), k) * scale + np.concatenate(
        feats["personal_items"].to_numpy())
    rows = dataset.interactions
    return np.isin(rows["user"].to_numpy() * scale + rows["item"].to_numpy(), truth)


def _features(dataset: Dataset) -> pd.DataFrame:
    feats = dataset.user_features
    if feats is None or "personal_items" not in feats:
        raise ConfigError(f"dataset {dataset.name!r} has no personal_items ground truth; "
                          "use a dataset made by fedrec.data.synthetic.generate")
    return feats
