"""Event-level (micro) averaging by hand, and the baseline passes on the hand-made timeline."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.c3drec import baselines as B
from fedrec.c3drec.config import C3DRecConfig
from fedrec.c3drec.pipeline import metrics
from fedrec.c3drec.timeline import build_timeline
from tests.c3drec.test_timeline import CFG, table


def test_micro_weights_devices_by_their_events() -> None:
    # device A (old): 3 events, hits at ranks 0 and 1; device B (new): 1 event, a miss
    a = metrics(np.array([[5, 1], [2, 9], [7, 7]]), np.array([[5, 1], [0, 0], [0, 0]]),
                np.array([5, 9, 4]), 2, "old")
    b = metrics(np.array([[1, 2]]), np.array([[3, 2]]), np.array([3]), 2, "new")
    m = B.micro([a, b], k=2)
    assert m["recall@2"] == pytest.approx(2 / 4) and m["mrr@2"] == pytest.approx((1 + 0.5) / 4)
    assert m["all_recall@2"] == pytest.approx(2 / 4) and m["all_mrr@2"] == pytest.approx(2 / 4)
    assert m["old_recall@2"] == pytest.approx(2 / 3) and m["new_recall@2"] == 0.0
    assert m["macro_recall@2"] == pytest.approx((2 / 3 + 0) / 2)
    assert (m["events"], m["old_events"], m["new_devices"]) == (4.0, 3.0, 1.0)


def test_baseline_passes_score_every_device_with_held_out_clicks() -> None:
    data = build_timeline(table(), CFG)
    c = C3DRecConfig(embedding_dim=3, hidden_dim=4, max_len=3, global_epochs=2, global_batch=4,
                     model_sparsity=0.0, emb_sparsity=0.0, device_batch=2)
    cands = [np.arange(data.n_items)] * data.n_devices
    g, only_g = B.only_global(data, cands, c, seed=0)
    gp = B.personal_pass(data, g, cands, c, seed=0, epochs=2)
    pers = B.only_personal(data, cands, c, seed=0, epochs=2)
    for rows in (only_g, gp, pers):
        assert len(rows) == 2 and [r["test_events"] for r in rows] == [1.0, 1.0]
    assert g.events == 2 * data.central.n_events                     # trained on all pre-T_test
    assert only_g[0]["test_recall@20"] == only_g[0]["test_all_recall@20"] == 1.0  # 5 items < 20
