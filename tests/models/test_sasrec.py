"""SASRec: compaction of any padding, causality, recency positions, seeded init, a tiny fit."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from fedrec.errors import ConfigError
from fedrec.models import build_model
from fedrec.models.base import PAD, Batch
from fedrec.models.sasrec import SASRec, compact_history, recency_positions

P = PAD
# the same real items, left-padded (base.py) and end-padded (the sample view)
LEFT = torch.tensor([[P, P, 3, 1, 4], [P, P, P, P, 2], [P, P, P, P, P], [5, 9, 2, 6, 5]])
END = torch.tensor([[3, 1, 4, P, P], [2, P, P, P, P], [P, P, P, P, P], [5, 9, 2, 6, 5]])
CANDS = torch.tensor([[0, 4, 7], [2, 2, 9], [1, 3, 5], [6, 8, 0]])


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded (intra-op threads only add overhead)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(**kw: object) -> SASRec:
    args: dict = {"n_items": 10, "dim": 8, "max_len": 6, "blocks": 2, "heads": 2, "seed": 0}
    m = SASRec(**{**args, **kw})
    return m.eval()


def test_compact_history_by_hand() -> None:
    h = torch.tensor([[P, 3, P, 1, 4], [2, P, P, P, P], [P, P, P, P, P], [5, 9, 2, 6, 5]])
    ids, length = compact_history(h, max_len=3)
    assert ids.tolist() == [[3, 1, 4], [2, P, P], [P, P, P], [2, 6, 5]]
    assert length.tolist() == [3, 1, 0, 3]
    ids, length = compact_history(LEFT, max_len=10)  # width = longest row
    assert ids.tolist() == END.tolist() and length.tolist() == [3, 1, 0, 5]
    ids, length = compact_history(torch.full((2, 3), P), max_len=4)
    assert ids.tolist() == [[P], [P]] and length.tolist() == [0, 0]
    ids, length = compact_history(torch.empty(2, 0, dtype=torch.long), max_len=4)
    assert ids.tolist() == [[P], [P]] and length.tolist() == [0, 0]


def test_recency_positions_count_back_from_the_last_item() -> None:
    assert recency_positions(torch.tensor([3, 1, 0]), 4).tolist() == [
        [2, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_shapes() -> None:
    m, b = _model(), Batch(history=LEFT, items=CANDS[:, 0], labels=torch.tensor([1.0, 0, 1, 0]))
    assert m.user_embedding(b).shape == (4, 8)
    assert m.score(b, CANDS).shape == (4, 3)
    assert m.score_all(b).shape == (4, 10)
    assert m.loss(b).shape == ()
    assert m.states(LEFT)[0].shape == (4, 5, 8)


def test_left_and_end_padding_give_the_same_scores() -> None:
    m = _model()
    with torch.no_grad():
        left, end = m.score_all(Batch(history=LEFT)), m.score_all(Batch(history=END))
    assert torch.allclose(left, end, atol=1e-6)
    assert not torch.allclose(left[0], left[1])  # the history matters


def test_extra_padding_anywhere_changes_nothing() -> None:
    m = _model()
    wide = torch.cat([torch.full((4, 2), P), END, torch.full((4, 3), P)], dim=1)
    middle = torch.tensor([[3, P, 1, P, 4], [P, 2, P, P, P], [P, P, P, P, P], [5, 9, 2, 6, 5]])
    with torch.no_grad():
        base = m.score(Batch(history=END), CANDS)
        for h in (wide, middle):
            assert torch.allclose(m.score(Batch(history=h), CANDS), base, atol=1e-6)


def test_rows_do_not_depend_on_the_rest_of_the_batch() -> None:
    m = _model()
    with torch.no_grad():
        together = m.score_all(Batch(history=LEFT))
        for r in range(4):
            alone = m.score_all(Batch(history=LEFT[r : r + 1, :]))
            assert torch.allclose(alone, together[r : r + 1], atol=1e-6)


def test_causal_a_later_item_does_not_change_earlier_states() -> None:
    m = _model()
    h = torch.tensor([[5, 9, 2, 6, 5]])
    changed = h.clone()
    changed[0, 3] = 1  # position 3 of 5
    with torch.no_grad():
        a, _ = m.states(h)
        b, _ = m.states(changed)
    assert torch.allclose(a[:, :3], b[:, :3], atol=1e-6)  # earlier cuts unchanged
    assert not torch.allclose(a[:, 3:], b[:, 3:])  # the changed and later ones move


def test_representation_is_the_state_at_the_last_real_item() -> None:
    m = _model()
    with torch.no_grad():
        h, length = m.states(END)
        u = m.user_embedding(Batch(history=LEFT))
    assert length.tolist() == [3, 1, 0, 5]
    for row, n in enumerate(length.tolist()):
        assert torch.allclose(u[row], h[row, max(n - 1, 0)], atol=1e-6)


def test_without_blocks_the_representation_is_the_last_item_at_position_zero() -> None:
    m = _model(blocks=0)
    with torch.no_grad():
        u = m.user_embedding(Batch(history=END))
        for row, last in ((0, 4), (1, 2), (3, 5)):
            x = m.item_emb.weight[last] * math.sqrt(8) + m.pos_emb.weight[0]
            assert torch.allclose(u[row], m.ln_out(x), atol=1e-5)


def test_empty_history_is_the_final_norm_bias() -> None:
    m = _model()
    with torch.no_grad():
        m.ln_out.bias.copy_(torch.arange(8.0))
        u = m.user_embedding(Batch(history=END))
    assert torch.equal(u[2], torch.arange(8.0))


def test_histories_longer_than_max_len_keep_the_most_recent() -> None:
    m = _model(max_len=3)
    long = torch.tensor([[7, 8, 9, 2, 6, 5]])
    with torch.no_grad():
        a = m.score_all(Batch(history=long))
        b = m.score_all(Batch(history=torch.tensor([[2, 6, 5, P]])))
    assert torch.allclose(a, b, atol=1e-6)


def test_score_equals_score_all_gathered() -> None:
    m = _model()
    with torch.no_grad():
        full = m.score_all(Batch(history=LEFT))
        assert torch.allclose(m.score(Batch(history=LEFT), CANDS), full.gather(1, CANDS),
                              atol=1e-6)


def test_seeded_init_is_reproducible_and_leaves_the_global_rng() -> None:
    torch.manual_seed(1)
    expected = torch.rand(2)
    torch.manual_seed(1)
    a, b, c = _model(seed=3), _model(seed=3), _model(seed=4)
    assert torch.equal(torch.rand(2), expected)
    pa, pb, pc = (dict(x.named_parameters()) for x in (a, b, c))
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    assert not torch.equal(pa["item_emb.weight"], pc["item_emb.weight"])
    assert not torch.equal(pa["blocks.0.att.in_proj_weight"], pc["blocks.0.att.in_proj_weight"])


def test_dropout_acts_in_training_mode_only() -> None:
    m, b = _model(dropout=0.5), Batch(history=LEFT)
    with torch.no_grad():
        assert torch.equal(m.score_all(b), m.score_all(b))
        m.train()
        torch.manual_seed(0)
        assert not torch.equal(m.score_all(b), m.score_all(b))


def test_loss_drops_on_a_tiny_overfit_problem() -> None:
    torch.manual_seed(0)
    m = _model(dropout=0.2).train()
    items = torch.tensor([4, 1, 2, 7, 0, 5, 3, 8])
    labels = torch.tensor([1.0, 0, 1, 0, 0, 1, 1, 0])
    history = torch.cat([END, LEFT.flip(1)])  # 8 rows, mixed padding
    b = Batch(history=history, items=items, labels=labels)
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    first = m.loss(b).item()
    for _ in range(100):
        opt.zero_grad()
        m.loss(b).backward()
        opt.step()
    m.eval()
    assert first > 0.6  # near log 2 at init
    assert m.loss(b).item() < 0.5 * first


def test_sequence_logits_are_the_states_dotted_with_the_targets() -> None:
    m = _model()
    targets = torch.tensor([[1, 4, 0, P, P], [7, P, P, P, P], [P, P, P, P, P], [9, 2, 6, 5, 3]])
    with torch.no_grad():
        h, _ = m.states(END)  # [4, 5, 8]
        one = m.sequence_logits(END, targets)
        many = m.sequence_logits(END, torch.stack([targets, targets.flip(1)], -1))
    assert one.shape == (4, 5) and many.shape == (4, 5, 2)
    assert torch.equal(many[..., 0], one)
    for b in range(4):
        for j in range(5):
            if END[b, j] == P or targets[b, j] == P:
                assert one[b, j] == 0.0
            else:
                want = h[b, j] @ m.item_emb.weight[targets[b, j]]
                assert torch.allclose(one[b, j], want, atol=1e-6)


def test_sequence_logits_last_slot_is_score_and_earlier_slots_are_causal() -> None:
    m = _model()
    cand = CANDS[:, :1].expand(4, 5)
    with torch.no_grad():
        logits = m.sequence_logits(END, cand)
        scores = m.score(Batch(history=END), CANDS[:, :1]).squeeze(1)
        changed = END.clone()
        changed[3, 3] = 1
        moved = m.sequence_logits(changed, cand)
    for b, n in enumerate([3, 1, 0, 5]):
        if n:  # the last real slot sees the history exactly as score does
            assert torch.allclose(logits[b, n - 1], scores[b], atol=1e-6)
    assert torch.allclose(moved[3, :3], logits[3, :3], atol=1e-6)
    assert not torch.allclose(moved[3, 3:], logits[3, 3:])


def test_sequence_logits_without_positions_give_every_prefixs_score() -> None:
    m = _model()
    with torch.no_grad():
        m.pos_emb.weight.zero_()
        logits = m.sequence_logits(END, CANDS[:, :1].expand(4, 5))
        for b, n in enumerate([3, 1, 0, 5]):
            for j in range(n):
                s = m.score(Batch(history=END[b : b + 1, : j + 1]), CANDS[b : b + 1, :1])
                assert torch.allclose(logits[b, j], s[0, 0], atol=1e-6)


def test_sequence_logits_padding_and_bad_shapes() -> None:
    m = _model()
    with torch.no_grad():
        base = m.sequence_logits(END, END)
        wide = m.sequence_logits(torch.cat([END, torch.full((4, 3), P)], 1),
                                 torch.cat([END, torch.full((4, 3), 2)], 1))
        assert torch.allclose(wide[:, :5], base, atol=1e-6) and torch.all(wide[:, 5:] == 0)
        assert m.sequence_logits(END[:, :0], END[:, :0]).shape == (4, 0)
    with pytest.raises(ConfigError, match="end padding only"):
        m.sequence_logits(LEFT, LEFT)
    with pytest.raises(ConfigError, match="at most max_len = 3"):
        _model(max_len=3).sequence_logits(END, END)
    with pytest.raises(ConfigError, match="must be \\[B, W\\] or \\[B, W, C\\]"):
        m.sequence_logits(END, END[:, :3])


def test_registry_and_bad_arguments() -> None:
    m = build_model("sasrec", n_users=3, n_items=5, dim=4, seed=0)
    assert isinstance(m, SASRec) and m.private_parameter_names() == frozenset()
    with pytest.raises(ConfigError, match="heads dividing dim"):
        SASRec(n_items=5, dim=6, heads=4)
    with pytest.raises(ConfigError, match="dropout in \\[0, 1\\)"):
        SASRec(n_items=5, dropout=1.0)
    with pytest.raises(ConfigError, match="max_len must be a positive integer"):
        SASRec(n_items=5, max_len=0)
    with pytest.raises(ConfigError, match="needs batch.history"):
        SASRec(n_items=5).score_all(Batch(items=torch.tensor([1])))
