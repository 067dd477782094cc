"""DCCL's evaluation: models that share f share one attention pass and score exactly as
scored alone; the sampled metrics are the ranks of each held-out target among its own
candidates."""

from __future__ import annotations

import numpy as np
import torch

from fedrec.dccl.scoring import evaluate_devices
from fedrec.models.base import Batch
from fedrec.models.patched_din import PatchedDIN


def test_models_scored_together_equal_each_scored_alone(tiny_view):
    torch.set_num_threads(1)
    devs = [tiny_view.device(d) for d in range(6)]
    m = PatchedDIN(n_items=tiny_view.n_items, meta_dim=8, hidden=(8, 4, 8), attention_hidden=(8,),
                   seed=0)
    meta = torch.randn(6, 8) * 30                       # a patch that moves scores
    both = evaluate_devices(m, devs, None, {"f_": None, "e_": meta}, full="e_")
    alone_f = evaluate_devices(m, devs, None, {"f_": None})
    alone_e = evaluate_devices(m, devs, None, {"e_": meta}, full="e_")
    for i in range(6):
        assert both[i] == {**alone_f[i], **alone_e[i]}
        assert "e_test_full_hr@10" in both[i] and "f_test_full_hr@10" not in both[i]
    assert any(b["f_valid_auc"] != b["e_valid_auc"] or b["f_test_auc"] != b["e_test_auc"]
               for b in both)                                            # the patch counts
    # by hand: device 0's test HR@10 under f is whether fewer than 10 candidates reach its score
    t = devs[0].test
    with torch.no_grad():
        s = m.score(Batch(history=torch.from_numpy(t.history.astype(np.int64))),
                    torch.from_numpy(t.candidates)).numpy()[0]
    assert both[0]["f_test_hr@10"] == float((s[1:] >= s[0]).sum() < 10)   # ties count against
