"""PrivacyLedger: devices' LDP reports -> accountant -> round metrics and privacy.json."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedrec.payload import SparseRows, add_sparse
from fedrec.protocol import DeviceReply
from strategies.accountant import PrivacyAccountant, gaussian_rdp, rdp_to_dp
from strategies.privacy import PRIVACY_FILE, record_replies
from tests.clients.threat_cases import build


def ldp_reply(d: int, eps: float, gaussian: bool = False, scale: float = 2.0) -> DeviceReply:
    up: dict[str, np.ndarray] = {}
    add_sparse(up, "item_emb.weight", SparseRows(np.array([d]), np.full((1, 8), 0.01, np.float32)))
    add_sparse(up, "item_bias", SparseRows(np.array([d]), np.zeros((1, 1), np.float32)))
    m = {"loss": 0.5, "ldp_epsilon": eps, "ldp_delta": 1e-5 if gaussian else 0.0, "ldp_scale": scale,
         "ldp_sensitivity": 1.0, "ldp_gaussian": float(gaussian)}
    return DeviceReply(device_id=d, upload=up, metrics=m, num_examples=4)


def test_laplace_composes_by_sum_gaussian_by_rdp_inf_is_unprotected() -> None:
    acc = PrivacyAccountant(delta=1e-5)
    for rnd in (1, 2):
        n = record_replies(acc, rnd, [ldp_reply(0, 0.5), ldp_reply(1, 3.0, gaussian=True),
                                      ldp_reply(2, math.inf), DeviceReply(device_id=3)])
        assert n == 3
    assert acc.device_total(0) == pytest.approx(1.0)
    alphas = np.asarray(acc.alphas)
    assert acc.device_total(1) == pytest.approx(rdp_to_dp(2 * gaussian_rdp(alphas, 2.0), alphas, 1e-5)[0])
    assert math.isinf(acc.device_total(2)) and 3 not in acc.ledgers


def test_ledger_keeps_the_protocols_aggregation_and_writes_privacy_json(tmp_path) -> None:
    _, st, _ = build(tmp_path / "l", ldp="laplace")
    _, plain, _ = build(tmp_path / "p")
    reps = [ldp_reply(0, 1.0), ldp_reply(1, 4.0)]
    metrics = st.aggregate(1, reps)
    plain.aggregate(1, reps)
    np.testing.assert_array_equal(st.global_arrays["item_emb.weight"], plain.global_arrays["item_emb.weight"])
    assert metrics == {"ldp_reports": 2.0, "ldp_max_epsilon": 4.0, "ldp_unprotected": 0.0}
    st.aggregate(2, reps)
    st.write_privacy()
    report = json.loads((tmp_path / "l" / PRIVACY_FILE).read_text())
    assert report["max_epsilon"] == 8.0 and report["max_device"] == 1
    assert [r["epsilon"] for r in report["per_device"]["0"]["rounds"]] == [1.0, 1.0]
    assert report["per_device"]["0"]["total_epsilon"] == 2.0
