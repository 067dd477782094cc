"""PatchedDIN: the gate and a zero metapatch give f exactly; per-row metapatches equal
separate per-device passes; the patch sizes of docs/dccl.md (decision 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrec.models.base import Batch
from fedrec.models.patched_din import PatchedDIN, apply_patch, patch_size


def model(**kw) -> PatchedDIN:
    return PatchedDIN(n_items=30, categories=np.arange(30) % 4 - (np.arange(30) == 5),
                      genres=np.array([[0, 2], [1, -1], [-1, -1]] * 10), profile_sizes=(2, 3),
                      seed=1, **kw)


def batch(B: int = 6, meta: torch.Tensor | None = None) -> Batch:
    g = torch.Generator().manual_seed(0)
    hist = torch.randint(0, 30, (B, 7), generator=g)
    hist[:, 5:] = -1                                             # end padding
    return Batch(history=hist, profile=torch.randint(-1, 2, (B, 2), generator=g),
                 items=torch.arange(B), labels=torch.ones(B), meta=meta)


def test_patch_sizes_are_the_houlsby_adapters_of_32_16_32():
    assert [patch_size(w) for w in (32, 16, 32)] == [1072, 280, 1072]
    assert model().patch_parameters() == 2424
    m = model()
    m.junctions = (True, False, False)
    assert m.patch_parameters() == 1072


def test_gate_off_and_zero_metapatch_give_f_exactly():
    m, cand = model(), torch.randint(0, 30, (6, 5), generator=torch.Generator().manual_seed(2))
    f = m.score(batch(), cand)
    patched = m.score(batch(meta=torch.randn(6, 32)), cand)
    assert not torch.allclose(f, patched)                       # the patches do something
    assert torch.equal(m.score(batch(meta=torch.zeros(6, 32)), cand), f)
    m.gate = False
    assert torch.equal(m.score(batch(meta=torch.randn(6, 32)), cand), f)


def test_per_row_metapatches_equal_one_pass_per_device():
    m, meta = model(), torch.randn(6, 32)
    cand = torch.randint(0, 30, (6, 4), generator=torch.Generator().manual_seed(3))
    together = m.score(batch(meta=meta), cand)
    b = batch(meta=meta)
    for i in range(6):
        one = Batch(history=b.history[i:i + 1], profile=b.profile[i:i + 1], meta=meta[i:i + 1])
        torch.testing.assert_close(m.score(one, cand[i:i + 1])[0], together[i], rtol=0, atol=1e-6)


def test_apply_patch_is_the_adapter_formula():
    z, d, r = torch.randn(2, 3, 4), 4, 2
    flat = torch.randn(2, patch_size(d))
    wd, bd, wu, bu = flat.split([r * d, r, d * r, d], dim=1)
    for b in range(2):
        h = torch.relu(z[b] @ wd[b].view(r, d).T + bd[b])
        torch.testing.assert_close(apply_patch(z, flat)[b], h @ wu[b].view(d, r).T + bu[b])


def test_groups_partition_the_parameters_and_score_all_matches_score():
    m = model()
    names = [n for n, _ in m.named_parameters()]
    assert sorted(m.basis_names() + m.backbone_names()) == sorted(names)
    assert all(n.startswith(("basis.", "encoder.")) for n in m.basis_names())
    b = batch(meta=torch.randn(6, 32))
    every = m.score_all(b)
    cand = torch.tensor([[0, 7, 29]] * 6)
    torch.testing.assert_close(every[:, [0, 7, 29]], m.score(b, cand), rtol=0, atol=1e-6)


def test_profile_features_are_required_when_built_with_them():
    b = batch()
    b.profile = None
    with pytest.raises(Exception, match="batch.profile"):
        model().score(b, torch.zeros(6, 1, dtype=torch.long))


def test_encoder_depends_only_on_the_profile_at_theta_zero():
    m = model()
    u = m.onehot(torch.tensor([[0, 1], [0, 1], [1, -1]]))
    out = m.encoder(torch.zeros(3, 32), u)
    torch.testing.assert_close(out[0], out[1])
    assert not torch.allclose(out[0], out[2])
    assert u.shape == (3, 5) and float(u[2, 2:].sum()) == 0.0   # unknown code: all zero


def test_frozen_features_in_small_passes_equal_one_pass(monkeypatch):
    import fedrec.models.patched_din as pd

    m, b = model(), batch(B=7)
    cand = torch.randint(0, 30, (7, 5), generator=torch.Generator().manual_seed(4))
    whole = m.features(b, m.items(cand))
    monkeypatch.setattr(pd, "ATTENTION_PAIRS", 2 * 5 * 7)               # 2 rows per pass
    parts = m.frozen_features(b.history, b.profile, cand)
    assert not parts.requires_grad
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-6)
    meta = torch.randn(7, 32)
    torch.testing.assert_close(m.head(parts, meta), m.score(batch(B=7, meta=meta), cand),
                               rtol=0, atol=1e-6)
    assert m.frozen_features(b.history[:0], b.profile[:0], cand[:0]).shape == (0, 5, m.in_width)
