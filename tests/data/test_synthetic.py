"""Synthetic generator: determinism, schema, and the planted ground truth, checked statistically."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrec.data import splits, synthetic
from fedrec.data.schema import COLUMNS, Dataset, make_interactions
from fedrec.data.synthetic import SIZES, SyntheticConfig, generate, personal_weight, preset
from fedrec.errors import ConfigError

SMALL = SIZES["small"]


@pytest.fixture(scope="module")
def small() -> Dataset:
    return generate(SMALL)


def test_same_config_gives_identical_tables() -> None:
    a, b = generate(SIZES["tiny"]), generate(SIZES["tiny"])
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.user_features, b.user_features)
    pd.testing.assert_frame_equal(a.item_features, b.item_features)
    other = generate(preset("tiny", seed=1))
    assert not a.interactions.equals(other.interactions)


def test_schema_ids_and_time_range(small: Dataset) -> None:
    df = small.interactions
    assert tuple(df.columns) == COLUMNS
    assert small.has_time and small.name == "synthetic"
    assert df["user"].min() == 1 and df["user"].max() == SMALL.n_users     # 1-based raw ids
    assert df["user"].nunique() == SMALL.n_users                          # min_interactions >= 1
    assert 1 <= df["item"].min() and df["item"].max() <= SMALL.n_items
    assert df["ts"].min() >= SMALL.t_start and df["ts"].max() < SMALL.t_end
    assert (df["ts"] < SMALL.t_gdpr).any() and (df["ts"] >= SMALL.t_gdpr).any()
    assert df.groupby("user").size().min() >= SMALL.min_interactions
    assert set(np.unique(df["rating"])) == {1.0, 2.0, 3.0, 4.0, 5.0}
    # the row's category is the item's category
    cats = small.item_features["category"].loc[df["item"]].to_numpy()
    np.testing.assert_array_equal(df["category"].to_numpy(), cats)
    # sorted by (user, ts): the splits accept it
    splits.sessionize(df)


def test_mean_interactions_per_user_matches_config(small: Dataset) -> None:
    assert len(small) / SMALL.n_users == pytest.approx(SMALL.mean_interactions, rel=0.05)


def test_item_popularity_is_long_tailed(small: Dataset) -> None:
    counts = np.sort(small.interactions["item"].value_counts().to_numpy())[::-1]
    top_decile = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_decile > 0.4          # uniform popularity would give ~0.1
    feats = small.item_features
    assert feats["popularity"].sum() == pytest.approx(1.0)
    assert sorted(feats["pop_rank"]) == list(range(SMALL.n_items))


def test_groups_prefer_their_categories(small: Dataset) -> None:
    df, users = small.interactions, small.user_features
    preferred = [c in g for c, g in zip(df["category"], users["group_categories"].loc[df["user"]])]
    chance = SMALL.group_categories / SMALL.n_categories                       # 0.12
    assert np.mean(preferred) > chance + 0.3


def test_personal_sets_are_outside_group_categories(small: Dataset) -> None:
    truth = synthetic.personal_items(small)
    users, cat = small.user_features, small.item_features["category"]
    assert sorted(truth) == list(range(1, SMALL.n_users + 1))
    for u, items in truth.items():
        assert len(items) == SMALL.personal_size and np.all(np.diff(items) > 0)
        assert not np.isin(cat.loc[items].to_numpy(), users.loc[u, "group_categories"]).any()


def test_personal_weight_ramps_from_deadline_to_end() -> None:
    c = SyntheticConfig(personal_strength=0.1, drift=0.6)
    mid = (c.t_gdpr + c.t_end) / 2
    got = personal_weight(c, np.array([c.t_start, c.t_gdpr - 1, c.t_gdpr, mid, c.t_end]))
    np.testing.assert_allclose(got, [0.1, 0.1, 0.1, 0.4, 0.7])


def test_personal_share_matches_planted_weight_and_drifts_up(small: Dataset) -> None:
    df = small.interactions
    hit = synthetic.personal_mask(small)
    ts = df["ts"].to_numpy()
    post = ts >= SMALL.t_gdpr
    expected_post = personal_weight(SMALL, ts[post]).mean()                    # ~0.37
    # the popular component hits P_u by chance too, hence the small one-sided margin
    assert expected_post - 0.005 < hit[post].mean() < expected_post + 0.03
    assert SMALL.personal_strength - 0.005 < hit[~post].mean() < SMALL.personal_strength + 0.03
    assert hit[post].mean() > hit[~post].mean() + 0.2                        # drift
    last_day = ts >= SMALL.t_test
    device = post & ~last_day
    assert hit[last_day].mean() > hit[device].mean() + 0.1                    # still rising


def test_personal_share_far_above_popularity_baseline(small: Dataset) -> None:
    df = small.interactions
    post = df.loc[df["ts"] >= SMALL.t_gdpr]
    freq = df["item"].value_counts(normalize=True)
    truth = synthetic.personal_items(small)
    # what a crowd-popularity model predicts: sum of global item frequencies over P_u
    baseline = np.mean([freq.reindex(items).fillna(0).sum() for items in truth.values()])
    hits = synthetic.personal_mask(Dataset("post", post, True, small.user_features))
    assert hits.mean() > 8 * baseline                                          # ~0.37 vs ~0.02


def test_personal_mask_on_hand_made_table() -> None:
    rows = make_interactions(user=[1, 1, 2, 2, 2], item=[10, 11, 10, 12, 13], ts=[0, 1, 0, 1, 2])
    users = pd.DataFrame({"personal_items": [np.array([10, 13]), np.array([12, 13])]},
                         index=pd.Index([1, 2], name="user"))
    ds = Dataset("hand", rows, True, users)
    np.testing.assert_array_equal(synthetic.personal_mask(ds), [True, False, False, True, True])
    assert {u: p.tolist() for u, p in synthetic.personal_items(ds).items()} == {
        1: [10, 13], 2: [12, 13]}


def test_ground_truth_helpers_reject_other_datasets() -> None:
    ds = Dataset("ml-1m", make_interactions([1], [1], [0]), True)
    with pytest.raises(ConfigError, match="no personal_items ground truth"):
        synthetic.personal_items(ds)


def test_new_users_only_appear_after_deadline(small: Dataset) -> None:
    df, users = small.interactions, small.user_features
    first = df.groupby("user")["ts"].min()
    new = users["is_new"]
    assert 0.05 < new.mean() < 0.15
    assert (first[new] >= SMALL.t_gdpr).all()
    assert (first[~new] < SMALL.t_gdpr).mean() > 0.95
    assert (users.loc[~new, "arrival"] == SMALL.t_start).all()
    _, found_new = splits.old_new_users(df, 0.9)
    assert new.loc[found_new].mean() > 0.6          # C3DRec's rule mostly finds them


def test_behaviour_rates_and_sessions(small: Dataset) -> None:
    df = small.interactions
    rates = df["behavior"].value_counts(normalize=True)
    assert rates["buy"] == pytest.approx(SMALL.buy_prob, abs=0.005)
    assert rates["cart"] == pytest.approx(SMALL.cart_prob, abs=0.005)
    assert rates["fav"] == pytest.approx(SMALL.fav_prob, abs=0.005)
    n_sessions = splits.sessionize(df).max() + 1
    assert 6.0 < len(df) / n_sessions <= SMALL.session_length     # few sessions merge by chance


def test_ratings_higher_on_personal_items(small: Dataset) -> None:
    hit = synthetic.personal_mask(small)
    rating = small.interactions["rating"].to_numpy()
    assert rating[hit].mean() > rating[~hit].mean() + 1.0


def test_ml1m_size_has_movielens_shape() -> None:
    # speed is measured by experiments/bench_load.py, not asserted here
    ds = generate(SIZES["ml-1m"])
    assert ds.n_users == 6040 and 3600 <= ds.n_items <= 3706
    assert 950_000 <= len(ds) <= 1_050_000


@pytest.mark.parametrize(("field", "value"), [
    ("n_users", 0), ("personal_strength", 1.5), ("n_items", 3), ("group_categories", 20),
    ("personal_size", 10_000), ("drift", 0.95), ("buy_prob", 0.99),
    ("mean_interactions", 1.0), ("click_gap", 0.0), ("zipf", -1.0), ("session_length", 0.5),
    ("t_gdpr", 0),
])
def test_impossible_values_raise_one_line_config_error(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        SyntheticConfig(**{field: value})
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"SyntheticConfig.{field}: ")


def test_preset_names_and_overrides() -> None:
    assert set(SIZES) == {"tiny", "small", "ml-1m"}
    assert preset("tiny", seed=7).seed == 7 and preset("tiny", seed=7).n_users == 30
    with pytest.raises(ConfigError, match="valid sizes: tiny, small, ml-1m"):
        preset("huge")
    with pytest.raises(ConfigError, match="unknown SyntheticConfig fields"):
        preset("tiny", users=3)
