"""Privacy accountant: hand-computed basic composition and RDP conversions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedrec.errors import ConfigError
from strategies.accountant import DEFAULT_ALPHAS, PrivacyAccountant, gaussian_rdp, rdp_to_dp

DELTA = math.exp(-8.0)  # log(1/delta) = 8


def test_gaussian_rdp_is_alpha_over_two_z_squared() -> None:
    np.testing.assert_allclose(gaussian_rdp(np.array([2.0, 5.0]), 2.0), [0.25, 0.625])
    with pytest.raises(ConfigError):
        gaussian_rdp(np.array([2.0]), 0.0)


def test_rdp_to_dp_minimises_over_grid() -> None:
    # rdp = alpha/2: alpha=2 -> 1 + 8 = 9; alpha=3 -> 1.5 + 4 = 5.5
    alphas = np.array([2.0, 3.0])
    assert rdp_to_dp(alphas / 2, alphas, DELTA) == (pytest.approx(5.5), 3.0)


def test_single_gaussian_round_hand_value() -> None:
    """z = 1: eps = min a/2 + 8/(a-1), optimum a = 1 + sqrt(16) = 5 (on the grid) -> 4.5."""
    assert 5.0 in DEFAULT_ALPHAS
    acc = PrivacyAccountant(delta=DELTA)
    acc.record(0, 7, "gaussian", epsilon=1.0, delta=1e-5, noise_multiplier=1.0)
    assert acc.device_total(7) == pytest.approx(4.5)


def test_gaussian_rdp_composes_over_rounds() -> None:
    """4 rounds at z = 2 have RDP 4 a/8 = a/2, the same as 1 round at z = 1 -> 4.5."""
    acc = PrivacyAccountant(delta=DELTA)
    for rnd in range(4):
        acc.record(rnd, 3, "gaussian", epsilon=0.5, delta=1e-5, noise_multiplier=2.0)
    assert acc.device_total(3) == pytest.approx(4.5)
    # cumulative total after the first round: RDP a/8, minimised over the grid
    first = acc.ledgers[3].rounds[0]["total_epsilon"]
    assert first == pytest.approx(min(a / 8 + 8 / (a - 1) for a in DEFAULT_ALPHAS))


def test_laplace_basic_composition_per_round_and_total() -> None:
    acc = PrivacyAccountant()
    for rnd, eps in enumerate([0.5, 1.0, 0.25]):
        acc.record(rnd, 1, "laplace", epsilon=eps)
    assert acc.device_total(1) == 1.75
    assert [r["total_epsilon"] for r in acc.ledgers[1].rounds] == [0.5, 1.5, 1.75]
    assert [r["epsilon"] for r in acc.ledgers[1].rounds] == [0.5, 1.0, 0.25]


def test_mixed_mechanisms_add() -> None:
    acc = PrivacyAccountant(delta=DELTA)
    acc.record(0, 2, "laplace", epsilon=1.0)
    acc.record(1, 2, "gaussian", epsilon=1.0, delta=1e-5, noise_multiplier=1.0)
    assert acc.device_total(2) == pytest.approx(5.5)
    assert acc.gaussian_total(2) == pytest.approx(4.5)


def test_report_is_json_with_max_and_unprotected() -> None:
    acc = PrivacyAccountant(delta=DELTA)
    acc.record(0, 0, "laplace", epsilon=2.0)
    acc.record(0, 1, "laplace", epsilon=3.0)
    acc.record(0, 5, "laplace", epsilon=math.inf)
    rep = json.loads(json.dumps(acc.report(), allow_nan=False))
    assert rep["max_epsilon"] == "inf" and rep["max_device"] == 5
    assert rep["max_finite_epsilon"] == 3.0 and rep["n_unprotected"] == 1
    assert rep["per_device"]["1"]["total_epsilon"] == 3.0
    assert rep["n_devices"] == 3


def test_report_max_without_unprotected_and_errors() -> None:
    acc = PrivacyAccountant()
    acc.record(0, 4, "laplace", epsilon=2.0)
    acc.record(0, 9, "laplace", epsilon=1.0)
    assert acc.report()["max_epsilon"] == 2.0 and acc.report()["max_device"] == 4
    assert PrivacyAccountant().report()["max_epsilon"] == 0.0
    with pytest.raises(ConfigError):
        acc.record(0, 4, "gaussian", epsilon=1.0)
    with pytest.raises(ConfigError):
        acc.record(0, 4, "exponential", epsilon=math.inf)
    assert acc.device_total(4) == 2.0
