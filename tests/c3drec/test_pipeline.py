"""Cloud/device steps: served model and its masks, personal state round trip, pull ranking
with downloaded rows and the device's own rows."""

from __future__ import annotations

import numpy as np
import torch

from fedrec.c3drec.config import C3DRecConfig
from fedrec.c3drec.pipeline import (
    OUT,
    GlobalModel,
    apply_state,
    device_topk,
    model_payload,
    own_items,
    personal_model,
    personal_state,
    pretrain_global,
    read_model,
    served_arrays,
)
from fedrec.c3drec.train import make_model
from fedrec.models.params import get_arrays

C = C3DRecConfig(embedding_dim=3, hidden_dim=4, max_len=4, topk=3)


def global_model(mode: str = "pull", gamma: float = 0.1) -> GlobalModel:
    arrays = get_arrays(make_model(6, 3, 4, seed=0))
    mask = np.ones((6, 4), bool)
    mask[0] = False
    arrays[OUT][0] = 0.0
    return GlobalModel(arrays, {OUT: mask}, mode, gamma)


def test_served_model_thresholds_pull_items_and_round_trips() -> None:
    g = global_model()
    arrays, masks = served_arrays(g)
    v = g.arrays[OUT]
    np.testing.assert_array_equal(arrays[OUT], np.where(np.abs(v) > 0.1, v, 0))
    assert masks[OUT].tolist() == (arrays[OUT] != 0).tolist()
    got, keep = read_model(model_payload(g, "csr"))
    np.testing.assert_array_equal(got[OUT], arrays[OUT])
    assert keep[OUT].tolist() == masks[OUT].tolist() and "gru.bias_hh_l0" not in keep
    push_arrays, _ = served_arrays(global_model("push"))
    np.testing.assert_array_equal(push_arrays[OUT], g.arrays[OUT])      # push: items as trained


def test_personal_state_round_trip_is_sparse() -> None:
    arrays = get_arrays(make_model(6, 3, 4, seed=0))
    m = personal_model(arrays, None, C)
    with torch.no_grad():
        m.gru.bias_hh_l0[1] += 1.0
        m.out.weight[2, 3] -= 2.0
    state = personal_state(m, arrays, C)
    back = apply_state(arrays, state)
    assert np.allclose(back["gru.bias_hh_l0"][1], arrays["gru.bias_hh_l0"][1] + 1.0)
    assert np.isclose(back[OUT][2, 3], arrays[OUT][2, 3] - 2.0)
    assert state[f"d.{OUT}~coo~idx"].tolist() == [2 * 4 + 3]            # one changed entry
    frozen = personal_state(m, arrays, C3DRecConfig(device_items=False))
    assert not any(k.startswith(f"d.{OUT}") for k in frozen)


def test_pull_ranks_downloaded_rows_except_its_own_items() -> None:
    m = make_model(6, 3, 4, seed=0)
    with torch.no_grad():
        m.out.weight.zero_()
        m.out.weight[4] = 5.0                         # the device's own row for item 4: high
    cand = np.array([1, 4, 5])
    down = np.array([[1.0] * 4, [-9.0] * 4, [0.5] * 4], np.float32)   # cloud's rows: 4 is low
    sessions = [np.array([2, 3, 4])]
    spec = C.sparse("none")
    rec = device_topk(m, sessions, C, spec, cand, down)
    u = rec["user_emb"]
    mine = device_topk(m, sessions, C, spec, cand, down, own=np.array([4]))
    scores = u @ np.where(np.isin(cand, [4])[:, None], m.out.weight.detach().numpy()[cand], down).T
    expected = cand[np.argsort(-scores, axis=1, kind="stable")]
    assert mine["topk"].tolist() == expected.tolist()
    assert own_items(sessions, C).tolist() == [2, 3, 4]
    assert own_items(sessions, C3DRecConfig(device_items=False)) is None


def test_pretrain_prunes_the_selected_matrices_to_the_target() -> None:
    sessions = [np.arange(6), np.arange(6)[::-1], np.array([1, 3, 5, 1])]
    base = {"embedding_dim": 3, "hidden_dim": 4, "global_epochs": 2, "global_batch": 4,
            "agp_steps": 2, "agp_every": 0.5, "model_sparsity": 0.5, "emb_sparsity": 0.0}
    g_all = pretrain_global(sessions, 6, C3DRecConfig(**base), "none", seed=0)
    g_gru = pretrain_global(sessions, 6, C3DRecConfig(**base, prune="gru"), "none", seed=0)
    assert set(g_all.masks) == {"item_emb.weight", "gru.weight_ih_l0", "gru.weight_hh_l0", OUT}
    assert set(g_gru.masks) == {"gru.weight_ih_l0", "gru.weight_hh_l0"}
    for name, m in g_all.masks.items():
        assert (~m).sum() == m.size // 2 and (g_all.arrays[name][~m] == 0).all()
