"""LdpDevice on real FedMF uploads: indices unchanged, per-device budgets, the cohort path kept,
and noise of the right scale (statistical tests on the residual of real payloads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from fedrec.ldp import clip_upload, device_epsilon, parse_epsilon_mix
from fedrec.payload import get_sparse
from fedrec.protocol import FIT
from tests.clients.threat_cases import build, run_round

MIX = "20:0.5,80:0.5"


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def _pair(tmp_path, mechanism: str, clip: str = "upload"):
    """Replies of round 1 without and with LDP (same devices, same training RNG)."""
    _, st, bare = build(tmp_path / "bare")
    _, _, ldp = build(tmp_path / "ldp", ldp=mechanism, ldp_bound=0.5, ldp_clip=clip,
                      ldp_epsilon_mix=MIX)
    return run_round(st, bare, 1, FIT, {}), run_round(st, ldp, 1, FIT, {})


def _residuals(plain, noisy, clip: str):
    """Per device: (noise / reported scale) over every float coordinate, and the reports."""
    out = []
    for a, b in zip(plain, noisy, strict=True):
        clipped, _ = clip_upload(a.upload, clip, 0.5)
        keys = sorted(k for k in a.upload if k.endswith(".val"))
        res = np.concatenate([(b.upload[k].astype(np.float64) - clipped[k]).ravel() for k in keys])
        out.append(res / b.metrics["ldp_scale"])
    return np.concatenate(out)


def test_indices_unchanged_and_each_device_reports_its_own_budget(tmp_path) -> None:
    plain, noisy = _pair(tmp_path, "laplace")
    mix = parse_epsilon_mix(MIX)
    eps = {r.device_id: r.metrics["ldp_epsilon"] for r in noisy}
    assert set(eps.values()) == {20.0, 80.0}
    for a, b in zip(plain, noisy, strict=True):
        assert eps[b.device_id] == device_epsilon(mix, 0, b.device_id)
        assert b.metrics["ldp_scale"] == pytest.approx(b.metrics["ldp_sensitivity"] / eps[b.device_id])
        assert b.metrics["loss"] == a.metrics["loss"] and b.metrics["ldp_gaussian"] == 0.0
        for name in ("item_emb.weight", "item_bias"):
            np.testing.assert_array_equal(get_sparse(a.upload, name).indices,
                                          get_sparse(b.upload, name).indices)
            assert get_sparse(b.upload, name).values.dtype == np.float32


def test_the_vectorised_cohort_path_is_kept(tmp_path, monkeypatch) -> None:
    _, st, ldp = build(tmp_path, ldp="laplace")
    base = ldp.base
    calls: list[int] = []
    real = base.fit_cohort
    monkeypatch.setattr(base, "fit_cohort", lambda tasks: calls.append(len(tasks)) or real(tasks))
    run_round(st, ldp, 1, FIT, {})
    assert calls == [8, 8, 8, 6]  # 30 devices in cohorts of devices-per-client = 8


def test_laplace_noise_on_real_uploads_has_the_reported_scale(tmp_path) -> None:
    z = _residuals(*_pair(tmp_path, "laplace"), "upload")
    assert len(z) > 5000
    assert stats.kstest(z, stats.laplace.cdf).pvalue > 1e-3
    assert np.mean(np.abs(z)) == pytest.approx(1.0, rel=0.05)  # E|Laplace(0, 1)| = 1


def test_gaussian_noise_on_real_uploads_has_the_reported_sigma(tmp_path) -> None:
    plain, noisy = _pair(tmp_path, "gaussian", clip="row")
    z = _residuals(plain, noisy, "row")
    assert stats.kstest(z, stats.norm.cdf).pvalue > 1e-3
    assert np.std(z) == pytest.approx(1.0, rel=0.05)
    assert all(r.metrics["ldp_gaussian"] == 1.0 and r.metrics["ldp_delta"] == 1e-5 for r in noisy)
