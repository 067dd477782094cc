"""Every registered model honours the RecModel contract (shapes, consistency, privacy, fit)."""

from __future__ import annotations

import pytest
import torch

from fedrec.errors import ConfigError
from fedrec.models import MODELS, build_model

from .cases import CANDIDATES, N_ITEMS, NAMES, batch, make

PRIVATE = {
    "mf": {"user_emb.weight"},
    "ncf": {"user_gmf.weight", "user_mlp.weight"},
    "pfedrec": {"score_fn.0.0.weight", "score_fn.0.0.bias", "score_fn.1.weight", "score_fn.1.bias"},
    "gru4rec": set(),
    "din": set(),
    "sasrec": set(),
}


@pytest.mark.parametrize("case", NAMES)
def test_shapes(case: str) -> None:
    model, b = make(case), batch(case)
    assert model.score(b, CANDIDATES).shape == (6, 3)
    assert model.score_all(b).shape == (6, N_ITEMS)
    loss = model.loss(b)
    assert loss.shape == () and torch.isfinite(loss)


@pytest.mark.parametrize("case", NAMES)
def test_score_equals_score_all_gathered(case: str) -> None:
    model, b = make(case), batch(case)
    with torch.no_grad():
        full = model.score_all(b)
        assert torch.allclose(model.score(b, CANDIDATES), full.gather(1, CANDIDATES), atol=1e-6)


@pytest.mark.parametrize("case", NAMES)
def test_private_and_shared_names(case: str) -> None:
    model = make(case)
    private = PRIVATE[case.split("-")[0]]
    names = [n for n, _ in model.named_parameters()]
    assert model.private_parameter_names() == private
    assert model.shared_parameter_names() == [n for n in names if n not in private]


@pytest.mark.parametrize("case", NAMES)
def test_same_seed_same_parameters(case: str) -> None:
    a, b, c = make(case, seed=3), make(case, seed=3), make(case, seed=4)
    for (n, pa), (_, pb), (_, pc) in zip(
        a.named_parameters(), b.named_parameters(), c.named_parameters()
    ):
        assert torch.equal(pa, pb), n
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


@pytest.mark.parametrize("case", NAMES)
def test_seed_leaves_global_rng_alone_and_manual_seed_works(case: str) -> None:
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    make(case, seed=5)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(2)
    a = make(case, seed=None)
    torch.manual_seed(2)
    b = make(case, seed=None)
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))


@pytest.fixture
def one_thread():
    """Tiny models train fastest single-threaded (intra-op threads only add overhead)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("case", NAMES)
def test_overfits_a_handful_of_examples(case: str, one_thread: None) -> None:
    model, b = make(case), batch(case)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)

    def step() -> None:
        opt.zero_grad()
        model.loss(b).backward()
        opt.step()

    first = model.loss(b).item()
    for _ in range(200):
        step()
    assert first > 0.3
    assert model.loss(b).item() < 0.02


def test_registry_names_and_unknown_name() -> None:
    assert list(MODELS) == ["mf", "ncf", "pfedrec", "gru4rec", "din", "sasrec"]
    with pytest.raises(ConfigError, match=r"unknown model 'svd'; valid names: \['din', 'gru4rec'"):
        build_model("svd", n_users=1, n_items=2)


def test_registry_bad_keyword_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="model 'mf'.*'width'"):
        build_model("mf", n_users=1, n_items=2, width=3)


@pytest.mark.parametrize("name", list(MODELS))
def test_bad_sizes_are_config_errors(name: str) -> None:
    with pytest.raises(ConfigError, match="n_items must be a positive integer"):
        build_model(name, n_users=1, n_items=0)
