"""Local DP mechanisms: exact clipping, noise scales, statistical tests of the applied noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from fedrec.errors import ConfigError
from fedrec.ldp import (
    REPORT_KEYS,
    LdpSpec,
    add_noise,
    assign_epsilons,
    clip_coords,
    clip_l2,
    clip_rows_l2,
    clip_upload,
    device_epsilon,
    gaussian_delta,
    gaussian_sigma,
    gaussian_sigma_analytic,
    gaussian_sigma_classic,
    laplace_scale,
    pad_with_fake_rows,
    parse_epsilon_mix,
    perturb_rows,
    perturb_upload,
    privatize_upload,
    report_from_metrics,
    report_metrics,
    upload_norm,
    upload_sensitivity,
)
from fedrec.payload import SparseRows, add_sparse

N_DRAWS = 200_000


def _upload() -> dict[str, np.ndarray]:
    up: dict[str, np.ndarray] = {"bias": np.array([0.0, 12.0], np.float32)}
    add_sparse(up, "emb", SparseRows(np.array([3, 7]), np.array([[3.0, 4.0], [0.0, 5.0]])))
    return up  # float norm^2 = 144 + 25 + 25 = 194


# ---------------------------------------------------------------- clipping


def test_clip_l2_scales_whole_array_to_bound() -> None:
    out = clip_l2(np.array([3.0, 4.0]), 1.0)
    np.testing.assert_allclose(out, [0.6, 0.8])
    np.testing.assert_array_equal(clip_l2(np.array([0.3, 0.4]), 1.0), [0.3, 0.4])


def test_clip_rows_l2_per_row_keeps_dtype() -> None:
    vals = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]], np.float32)
    out = clip_rows_l2(vals, 1.0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]], rtol=1e-6)


def test_clip_coords() -> None:
    np.testing.assert_array_equal(clip_coords(np.array([-3.0, 0.5, 2.0]), 1.0), [-1.0, 0.5, 1.0])


def test_clip_upload_joint_l2_leaves_indices() -> None:
    up = _upload()
    out, units = clip_upload(up, "upload", math.sqrt(194) / 2)
    assert units == 1
    assert upload_norm(out) == pytest.approx(math.sqrt(194) / 2)
    np.testing.assert_allclose(out["emb.val"], up["emb.val"] / 2)
    np.testing.assert_array_equal(out["emb.idx"], [3, 7])
    assert out["bias"].dtype == np.float32


def test_clip_upload_row_and_coord_units() -> None:
    out, units = clip_upload(_upload(), "row", 1.0)
    assert units == 3  # two embedding rows + the 1-D bias array
    np.testing.assert_allclose(out["emb.val"], [[0.6, 0.8], [0.0, 1.0]])
    np.testing.assert_allclose(out["bias"], [0.0, 1.0])
    out, units = clip_upload(_upload(), "coord", 2.0)
    assert units == 6
    np.testing.assert_array_equal(out["emb.val"], [[2.0, 2.0], [0.0, 2.0]])


def test_upload_sensitivity_is_diameter() -> None:
    assert upload_sensitivity("upload", 1.5, 1, 16, "l2") == 3.0
    assert upload_sensitivity("upload", 1.5, 1, 16, "l1") == 12.0
    assert upload_sensitivity("row", 1.0, 4, 16, "l2") == 4.0
    assert upload_sensitivity("row", 1.0, 4, 16, "l1") == 16.0
    assert upload_sensitivity("coord", 0.5, 16, 16, "l1") == 16.0
    assert upload_sensitivity("coord", 0.5, 16, 16, "l2") == 4.0


# ---------------------------------------------------------------- noise scales


def test_laplace_scale() -> None:
    assert laplace_scale(2.0, 0.5) == 4.0
    assert laplace_scale(2.0, math.inf) == 0.0
    with pytest.raises(ConfigError):
        laplace_scale(1.0, 0.0)


def test_gaussian_classic_formula_and_domain() -> None:
    expected = math.sqrt(2 * math.log(1.25 / 1e-5)) * 2.0 / 0.5
    assert gaussian_sigma_classic(2.0, 0.5, 1e-5) == pytest.approx(expected, rel=1e-15)
    with pytest.raises(ConfigError, match="analytic"):
        gaussian_sigma_classic(1.0, 1.0, 1e-5)


def test_gaussian_analytic_known_value_and_tight() -> None:
    # Balle & Wang 2018: eps=1, delta=1e-5, sensitivity 1 -> sigma ~= 3.73 (classic is invalid)
    sigma = gaussian_sigma_analytic(1.0, 1.0, 1e-5)
    assert sigma == pytest.approx(3.7306, abs=1e-4)
    assert gaussian_delta(sigma, 1.0, 1.0) <= 1e-5
    assert gaussian_delta(sigma * (1 - 1e-6), 1.0, 1.0) > 1e-5  # smallest such sigma
    assert gaussian_sigma_analytic(3.0, 1.0, 1e-5) == pytest.approx(3 * sigma, rel=1e-9)
    assert gaussian_sigma(1.0, 0.5, 1e-5) < gaussian_sigma(1.0, 0.5, 1e-5, "classic")


def test_gaussian_delta_matches_privacy_profile_integral() -> None:
    """delta(eps) = int max(0, p(x) - e^eps q(x)) dx with p = N(0, s^2), q = N(D, s^2)."""
    s, sens, eps = 2.0, 1.5, 0.8
    p, q = stats.norm(0, s), stats.norm(sens, s)
    integral, _ = integrate.quad(lambda x: max(0.0, p.pdf(x) - math.exp(eps) * q.pdf(x)),
                                 -40, 40, points=[sens / 2 - eps * s**2 / sens], limit=200)
    assert gaussian_delta(s, sens, eps) == pytest.approx(integral, rel=1e-7)


# ---------------------------------------------------------------- statistical noise tests


def test_laplace_noise_has_exact_scale() -> None:
    b = laplace_scale(1.0, 0.25)  # 4.0
    noise = add_noise(np.zeros(N_DRAWS), "laplace", b, np.random.default_rng(0))
    assert np.mean(np.abs(noise)) == pytest.approx(b, rel=0.01)  # E|X| = b
    assert stats.kstest(noise, stats.laplace(scale=b).cdf).pvalue > 0.01
    # the same test rejects a 5% wrong scale: it can fail
    assert stats.kstest(noise, stats.laplace(scale=1.05 * b).cdf).pvalue < 1e-6


def test_gaussian_noise_has_exact_sigma() -> None:
    sigma = gaussian_sigma(2.0, 1.0, 1e-5)
    noise = add_noise(np.zeros((N_DRAWS // 4, 4)), "gaussian", sigma, np.random.default_rng(1))
    assert np.std(noise) == pytest.approx(sigma, rel=0.01)
    assert stats.kstest(noise.ravel(), stats.norm(scale=sigma).cdf).pvalue > 0.01
    assert stats.kstest(noise.ravel(), stats.norm(scale=1.05 * sigma).cdf).pvalue < 1e-6


def test_privatize_upload_noise_scale_and_report() -> None:
    """Whole-upload L2 clip to C, Laplace: b = 2C sqrt(n) / eps over n float coordinates."""
    up = _upload()
    spec = LdpSpec(mechanism="laplace", clip="upload", bound=1.0, epsilon=2.0)
    rng = np.random.default_rng(2)
    clipped, _ = clip_upload(up, "upload", 1.0)
    draws = []
    for _ in range(5_000):
        noisy, report = privatize_upload(up, spec, rng)
        np.testing.assert_array_equal(noisy["emb.idx"], [3, 7])
        draws.append(noisy["emb.val"] - clipped["emb.val"])
    b = 2 * 1.0 * math.sqrt(6) / 2.0
    assert report.scale == pytest.approx(b) and report.sensitivity == pytest.approx(2 * math.sqrt(6))
    assert report.delta == 0.0
    assert stats.kstest(np.ravel(draws), stats.laplace(scale=b).cdf).pvalue > 0.01


def test_privatize_gaussian_report_and_inf_epsilon() -> None:
    spec = LdpSpec(mechanism="gaussian", clip="row", bound=0.5, epsilon=1.0, delta=1e-5)
    _, report = privatize_upload(_upload(), spec, np.random.default_rng(3))
    assert report.sensitivity == pytest.approx(2 * 0.5 * math.sqrt(3))
    assert report.noise_multiplier == pytest.approx(gaussian_sigma_analytic(1.0, 1.0, 1e-5))
    free = LdpSpec(mechanism="gaussian", clip="row", bound=0.5, epsilon=math.inf)
    out, report = privatize_upload(_upload(), free, np.random.default_rng(3))
    np.testing.assert_allclose(out["emb.val"], [[0.3, 0.4], [0.0, 0.5]])  # clipped, no noise
    assert report.scale == 0.0


def test_perturb_rows_only_touches_uploaded_values() -> None:
    rows = SparseRows(np.array([1, 4]), np.zeros((2, 3), np.float32))
    out = perturb_rows(rows, "gaussian", 1.0, np.random.default_rng(4))
    np.testing.assert_array_equal(out.indices, [1, 4])
    assert out.values.shape == (2, 3) and out.values.dtype == np.float32
    assert np.all(out.values != 0)


def test_perturb_upload_is_deterministic_given_seed() -> None:
    a = perturb_upload(_upload(), "laplace", 1.0, np.random.default_rng(5))
    b = perturb_upload(dict(reversed(list(_upload().items()))), "laplace", 1.0,
                       np.random.default_rng(5))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_pad_with_fake_rows() -> None:
    rows = SparseRows(np.array([5, 2]), np.array([[1.0], [2.0]]))
    out = pad_with_fake_rows(rows, n_items=10, n_fake=3, rng=np.random.default_rng(6))
    assert list(out.indices) == sorted(out.indices) and len(set(out.indices)) == 5
    real = dict(zip(out.indices.tolist(), out.values[:, 0].tolist(), strict=True))
    assert real[5] == 1.0 and real[2] == 2.0
    assert sum(v == 0.0 for v in real.values()) == 3
    with pytest.raises(ConfigError, match="only 4 untouched"):
        pad_with_fake_rows(rows, n_items=6, n_fake=5, rng=np.random.default_rng(6))
    with pytest.raises(ValueError):
        pad_with_fake_rows(rows, n_items=4, n_fake=1, rng=np.random.default_rng(6))


def test_fake_rows_cover_all_untouched_items_uniformly() -> None:
    rows = SparseRows(np.array([0]), np.ones((1, 1)))
    rng = np.random.default_rng(7)
    hits = np.zeros(5)
    for _ in range(4000):
        np.add.at(hits, pad_with_fake_rows(rows, 5, 2, rng).indices, 1)
    assert hits[0] == 4000
    np.testing.assert_allclose(hits[1:] / 4000, 0.5, atol=0.03)


# ---------------------------------------------------------------- privacy heterogeneity


def test_parse_epsilon_mix() -> None:
    assert parse_epsilon_mix("1:0.3,4:0.5,inf:0.2") == ((1.0, 0.3), (4.0, 0.5), (math.inf, 0.2))
    for bad in ("1:0.3,4:0.5", "0:1", "a:1", "1", "1:-0.5,2:1.5"):
        with pytest.raises(ConfigError):
            parse_epsilon_mix(bad)


def test_device_epsilon_depends_only_on_seed_and_id() -> None:
    mix = parse_epsilon_mix("1:0.3,4:0.5,inf:0.2")
    ids = np.arange(10_000)
    eps = assign_epsilons(mix, 0, ids)
    assert eps[1234] == device_epsilon(mix, 0, 1234)
    np.testing.assert_array_equal(assign_epsilons(mix, 0, ids[::-1]), eps[::-1])
    for value, share in mix:
        assert np.mean(eps == value) == pytest.approx(share, abs=0.02)
    assert not np.array_equal(assign_epsilons(mix, 1, ids), eps)


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_a_noise_report_survives_the_reply_metrics(mechanism: str) -> None:
    upload = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    spec = LdpSpec(mechanism=mechanism, epsilon=0.5)
    _, rep = privatize_upload(upload, spec, np.random.default_rng(0))
    metrics = report_metrics(rep)
    assert set(metrics) == set(REPORT_KEYS)
    assert report_from_metrics({"loss": 1.0, **metrics}) == rep
    assert report_from_metrics({"loss": 1.0}) is None
