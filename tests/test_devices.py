"""Exact numbers for the cost model, tier-mix parsing errors, seeded assignment stability."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedrec import devices as d
from fedrec.errors import ConfigError

# Made-up profile with round numbers so every cost can be computed by hand.
TOY = d.DeviceProfile(
    name="toy", flops_per_s=1e9, ram_bytes=1000, uplink_bps=1e6, downlink_bps=4e6,
    availability=0.25, battery_budget_j=100.0, energy_per_flop_j=1e-9,
    energy_per_byte_up_j=2e-6, energy_per_byte_down_j=1e-6, app_ram_fraction=0.5,
)


# --------------------------------------------------------------------------- cost functions
def test_compute_transfer_round_time():
    assert d.compute_time_s(5e9, TOY) == 5.0
    assert d.transfer_time_s(1e6, 2e6, TOY) == 8.0 + 4.0  # 8 Mbit at 1 Mb/s + 16 Mbit at 4 Mb/s
    assert d.transfer_time_s(0, 0, TOY) == 0.0
    assert d.round_time_s(5e9, 1e6, 2e6, TOY) == 17.0


def test_memory_estimate_and_feasibility_boundary():
    assert d.training_memory_bytes(100, 50, 25) == 275  # 2 x model + act + data
    assert d.training_memory_bytes(100, 50, 25, optimizer_slots=2) == 475  # Adam
    assert d.memory_feasible(200, 50, 50, TOY)  # 500 == 1000 * 0.5: fits exactly
    assert not d.memory_feasible(200, 50, 51, TOY)
    assert not d.memory_feasible(100, 0, 0, TOY, optimizer_slots=4)  # 600 > 500


def test_energy_and_rounds_affordable():
    assert d.energy_j(1e9, 1000, 2000, TOY) == pytest.approx(1.0 + 0.002 + 0.002)
    assert d.rounds_affordable(3.0, TOY) == 33  # floor(100 / 3)
    assert d.rounds_affordable(3.0, dataclasses.replace(TOY, max_rounds=5)) == 5
    with pytest.raises(ConfigError):
        d.rounds_affordable(0.0, TOY)


def test_lte_energy_per_byte_huang_model():
    # 10 Mbit/s up: 8 * (438.39 + 1288.04 / 10) nJ per byte
    assert d.lte_energy_per_byte(10e6, d.LTE_ALPHA_UP_MW_PER_MBPS) == pytest.approx(
        8 * (438.39 + 128.804) * 1e-9)
    # slower links pay the base power for longer: more energy per byte
    assert d.lte_energy_per_byte(1e6, 51.97) > d.lte_energy_per_byte(20e6, 51.97)


# --------------------------------------------------------------------------- FLOP counting
def test_flop_counters_hand_computed():
    assert d.matmul_flops(2, 3, 4) == 48
    assert d.mf_train_flops(10, 8) == 3 * 10 * 2 * 2 * 8  # BPR: pos + neg dot products
    assert d.mf_train_flops(10, 8, items_per_example=1) == 480
    assert d.mlp_flops([4, 3, 1], n=5, train=False) == 2 * 5 * 4 * 3 + 2 * 5 * 3 * 1  # 150
    assert d.mlp_flops([4, 3, 1], n=5) == 450
    # GRU: 3 gates x 2 x hidden x (input + hidden) per step: 3*2*2*(3+2) = 60
    assert d.gru_flops(seq_len=4, hidden=2, input_dim=3, n=2, train=False) == 2 * 4 * 60
    assert d.gru_flops(seq_len=4, hidden=2, input_dim=3, n=2) == 3 * 480
    assert d.param_bytes(10) == 40 and d.param_bytes(10, 2) == 20


# --------------------------------------------------------------------------- tiers
def test_tiers_carry_the_papers_device_facts():
    assert d.TIERS["pixel2"].ram_bytes == 4 * d.GiB  # Pixel 2: 4 GB
    assert d.TIERS["iphone8plus"].ram_bytes == 3 * d.GiB  # CoDA: 3 GB LPDDR4X
    # C3DRec's on-device training used up to 842.9 MB on the Pixel 2: must be feasible.
    assert d.memory_feasible(842.9e6, 0, 0, d.TIERS["pixel2"])
    # its ablation without item embedding ("memory: infinite") must not be.
    assert not d.memory_feasible(156.8e6 * 20, 0, 0, d.TIERS["pixel2"])
    speeds = [d.TIERS[n].flops_per_s for n in ("pixel2", "lowend", "iphone8plus", "highend")]
    assert speeds == sorted(speeds)
    with pytest.raises(TypeError):
        d.TIERS["new"] = TOY  # read-only mapping


def test_profile_validation():
    with pytest.raises(ConfigError, match="flops_per_s must be > 0"):
        dataclasses.replace(TOY, flops_per_s=0)
    with pytest.raises(ConfigError, match=r"availability must be in \[0, 1\]"):
        dataclasses.replace(TOY, availability=1.5)


# --------------------------------------------------------------------------- tier mixes
def test_parse_tier_mix_normalises_and_keeps_order():
    mix = d.parse_tier_mix("pixel2:0.5, iphone8plus:0.3,highend:0.2")
    assert list(mix) == ["pixel2", "iphone8plus", "highend"]
    assert mix == pytest.approx({"pixel2": 0.5, "iphone8plus": 0.3, "highend": 0.2})
    assert d.parse_tier_mix("pixel2:2,highend:6") == {"pixel2": 0.25, "highend": 0.75}
    assert d.parse_tier_mix("highend") == {"highend": 1.0}


@pytest.mark.parametrize("text, message", [
    ("pixel3:1", "unknown device tier 'pixel3'.*valid tiers: highend, iphone8plus"),
    ("pixel2:0", "must be a positive number"),
    ("pixel2:-1", "must be a positive number"),
    ("pixel2:nan", "must be a positive number"),
    ("pixel2:abc", "is not a number"),
    ("pixel2:1,,highend:1", "empty entry"),
    ("pixel2:1,pixel2:2", "given twice"),
])
def test_parse_tier_mix_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        d.parse_tier_mix(text)


def test_assign_tiers_seeded_stable_and_proportional():
    mix = d.parse_tier_mix("pixel2:0.5,iphone8plus:0.3,highend:0.2")
    a = d.assign_tiers(20_000, mix, seed=3)
    assert a.dtype == np.int64 and set(np.unique(a)) == {0, 1, 2}
    np.testing.assert_allclose(np.bincount(a) / a.size, [0.5, 0.3, 0.2], atol=0.015)
    np.testing.assert_array_equal(a[:500], d.assign_tiers(500, mix, seed=3))  # prefix-stable
    np.testing.assert_array_equal(a, d.assign_tiers(20_000, mix, seed=3))
    assert not np.array_equal(a[:500], d.assign_tiers(500, mix, seed=4))
    profiles = d.assign_profiles(5, mix, seed=3)
    assert [p.name for p in profiles] == [list(mix)[i] for i in a[:5]]


def test_availability_deterministic_and_rate():
    ids = np.arange(20_000)
    m1 = d.available_mask(0.3, seed=1, round_=7, device_ids=ids)
    np.testing.assert_array_equal(m1, d.available_mask(0.3, seed=1, round_=7, device_ids=ids))
    assert abs(m1.mean() - 0.3) < 0.015
    assert not np.array_equal(m1, d.available_mask(0.3, seed=1, round_=8, device_ids=ids))
    assert not np.array_equal(m1, d.available_mask(0.3, seed=2, round_=7, device_ids=ids))
    assert [d.is_available(TOY, 1, 7, i) for i in range(50)] == list(
        d.available_mask(0.25, 1, 7, np.arange(50)))
    assert not d.available_mask(0.0, 1, 7, ids).any() and d.available_mask(1.0, 1, 7, ids).all()


def test_hash_uniform_range_and_independence_of_streams():
    u = d.hash_uniform(0, 1, 0, np.arange(1000))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert not np.array_equal(u, d.hash_uniform(0, 2, 0, np.arange(1000)))
    assert d.hash_uniform(-5, 1, 0, 3).shape == (1,)  # negative seeds are accepted
