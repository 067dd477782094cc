"""The hand-written kernels of the batched fine-tuning against torch's own: a per-device GRU
(values and every gradient against ``torch.nn.GRU``), the blocked full-softmax
cross-entropy with given scores (against ``F.cross_entropy`` on the full score matrix) and
the top-K with ties (against ``fedrec.metrics.topk_items``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedrec.c3drec.batched_ops import BLOCK_ELEMENTS, FullSoftmaxCE, GRUSeq, gru_last, topk_rows
from fedrec.metrics import topk_items

A, B, T, E, H = 3, 2, 5, 4, 6


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def gru_inputs(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(A, B, T, E), (A, 3 * H, E), (A, 3 * H, H), (A, 3 * H), (A, 3 * H)]
    return [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


def reference_states(x, w_ih, w_hh, b_ih, b_hh) -> torch.Tensor:
    """Each device through its own torch.nn.GRU (functional weights)."""
    out = []
    for a in range(len(x)):
        weights = {"weight_ih_l0": w_ih[a], "weight_hh_l0": w_hh[a], "bias_ih_l0": b_ih[a],
                   "bias_hh_l0": b_hh[a]}
        gru = torch.nn.GRU(E, H, batch_first=True).double()
        out.append(torch.func.functional_call(gru, weights, (x[a],))[0])
    return torch.stack(out)


def test_gru_states_and_all_gradients_equal_torch_gru() -> None:
    ins = gru_inputs()
    w = torch.randn(A, B, T, H, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = GRUSeq.apply(*ins)
    want = reference_states(*ins)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    for a, b in zip(torch.autograd.grad((got * w).sum(), ins),
                    torch.autograd.grad((want * w).sum(), ins), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_gru_with_one_piece_per_device_leaves_its_bias_alone() -> None:
    """B = 1: the recurrent buffer must not alias the bias (it did once)."""
    x, w_ih, w_hh, b_ih, b_hh = (t.detach()[:, :1] if t.dim() == 4 else t.detach()
                                  for t in gru_inputs())
    before = b_hh.clone()
    got = GRUSeq.apply(x, w_ih, w_hh, b_ih, b_hh)
    torch.testing.assert_close(got, reference_states(x, w_ih, w_hh, b_ih, b_hh), rtol=0,
                               atol=1e-12)
    assert torch.equal(b_hh, before)


def test_gru_last_reads_each_history_to_its_length() -> None:
    x, w_ih, w_hh, b_ih, b_hh = (t.detach() for t in gru_inputs())
    length = torch.tensor([[5, 2], [0, 1], [3, 3]])
    got = gru_last(x, length, w_ih, w_hh, b_ih, b_hh)
    for a in range(A):
        for b in range(B):
            n = int(length[a, b])
            want = (reference_states(x[:, b:b + 1, :n], w_ih, w_hh, b_ih, b_hh)[a, 0, -1]
                    if n else torch.zeros(H, dtype=torch.float64))
            torch.testing.assert_close(got[a, b], want, rtol=0, atol=1e-12)


def test_full_softmax_ce_equals_cross_entropy_over_blocks_and_given_scores() -> None:
    g = torch.Generator().manual_seed(2)
    n_m, n_i = 700, 4000                        # 2.8M scores: two blocks of BLOCK_ELEMENTS
    assert n_m * n_i > BLOCK_ELEMENTS
    u = torch.randn(n_m, H, generator=g, dtype=torch.float64).requires_grad_()
    v = torch.randn(n_i, H, generator=g, dtype=torch.float64)
    y = torch.randint(0, n_i, (n_m,), generator=g)
    rows = torch.tensor([0, 0, 5, 330, 331, 699])         # some given scores in each block
    cols = torch.tensor([3, y[0].item(), 7, y[330].item(), 9, 11])
    given = torch.randn(len(rows), generator=g, dtype=torch.float64).requires_grad_()
    hit = cols == y[rows]
    target_given = torch.zeros(n_m, dtype=torch.bool).index_fill(0, rows[hit], True)
    ce = FullSoftmaxCE.apply(u, given, v, y, rows, cols, hit, target_given)
    s = (u @ v.T).index_put((rows, cols), given)
    want = F.cross_entropy(s, y, reduction="none")
    torch.testing.assert_close(ce, want, rtol=0, atol=1e-10)
    w = torch.rand(n_m, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((ce * w).sum(), [u, given]),
                    torch.autograd.grad((want * w).sum(), [u, given]), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_topk_rows_equals_topk_items_with_ties_and_nan() -> None:
    rng = np.random.default_rng(4)
    s = rng.integers(0, 4, (50, 30)).astype(np.float32)     # many ties at every cut-off
    s[3, 5] = np.nan
    s[7] = -np.inf
    for k in (1, 5, 20, 30):
        np.testing.assert_array_equal(topk_rows(torch.from_numpy(s), k).numpy(),
                                      topk_items(s.copy(), k))
    assert topk_rows(torch.from_numpy(s), 40).shape == (50, 30)
