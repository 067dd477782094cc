"""The centralised pipeline (the paper's Tables 2-3 and Fig. 4) on a tiny view."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from fedrec.mcsf.central import FAST_MODELS, SLOW_MODELS, CentralOptions, Pipeline
from fedrec.mcsf.train import full_ranks
from fedrec.metrics import as_csr


def test_a_full_rank_counts_the_unseen_items_scoring_at_least_the_target():
    # score = -item id (item 0 best); event 0: target 5, seen {1, 3}: items 0, 2, 4 beat it;
    # event 1: target 2, seen {2, 0}: the target is never excluded, only 1 beats it;
    # event 2: target 0, nothing beats it: rank 0; event 3: target 6, items 0-5 beat it and
    # item 7 ties it (ties count against the target): rank 7
    t = {"cand": torch.tensor([[5, 9], [2, 9], [0, 9], [6, 9]]),
         "owner": torch.zeros(4, dtype=torch.long)}
    seen = as_csr([np.array([1, 3]), np.array([2, 0]), np.array([], np.int64), np.array([])], 4, 8)

    def score(x):
        s = -x["cand"].double()
        return torch.where(x["cand"] == 7, -6.0, s)                 # item 7 ties item 6
    assert full_ranks(score, t, 8, seen, chunk=3).tolist() == [3, 1, 0, 7]


def test_impossible_full_ranking_options_are_one_line_errors_before_anything_runs(tmp_path, capsys):
    from pathlib import Path

    import pytest

    from experiments.mcsf import main
    from fedrec.errors import ConfigError

    config = Path(__file__).resolve().parents[2] / "experiments" / "mcsf_steam.toml"

    with pytest.raises(ConfigError, match="full_devices must be >= 0"):
        CentralOptions(full_ranking=True, full_devices=-1)
    with pytest.raises(ConfigError, match="turn full_ranking on"):
        CentralOptions(full_devices=500)
    with pytest.raises(SystemExit) as exit_:
        main(["tables", "--run-config", str(config), "--full-devices", "5",
              "--out", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "turn full_ranking on (--full-ranking)" in err[-1]
    assert list(tmp_path.iterdir()) == []                      # nothing written


def test_every_model_ranks_every_test_event_and_the_pipeline_is_deterministic():
    from experiments.setup import effective_config, resolve
    from tests.mcsf.cases import TINY

    cfg, cls = resolve(effective_config({}, {**TINY, "max-devices": 12}))
    view = cls.prepare_data(cfg)
    models = SLOW_MODELS + FAST_MODELS
    c = CentralOptions(fast_pretrain=3, fast_epochs=1, sasrec_blocks=1)
    first = Pipeline(view, cfg.protocol, c).run(models)
    again = Pipeline(view, cfg.protocol, c).run(("din", "mcsf-fast"))
    n, cands = 5 * view.n_devices, 1 + TINY["eval-negatives"]
    assert set(first) == set(models)
    for ranks in first.values():
        assert ranks.shape == (n,) and ranks.min() >= 0 and ranks.max() < cands
    assert np.array_equal(first["din"], again["din"])
    assert np.array_equal(first["mcsf-fast"], again["mcsf-fast"])
    assert not np.array_equal(first["fast"], first["fast-tuned"])     # E tuned or not


def test_full_ranking_ranks_every_model_among_every_item():
    from experiments.setup import effective_config, resolve
    from tests.mcsf.cases import TINY

    cfg, cls = resolve(effective_config({}, {**TINY, "max-devices": 8}))
    view = cls.prepare_data(cfg)
    models = ("sasrec", "din", "mcsf-slow", "din+gru4rec", "neumf", "mcsf-fast")
    c = CentralOptions(fast_pretrain=2, fast_epochs=1, sasrec_blocks=1, full_ranking=True)
    pipe = Pipeline(view, cfg.protocol, c)
    sampled = pipe.run(models)
    assert set(models) <= set(pipe.full)
    target = pipe.split.test.cand[:, 0]
    kept = np.asarray(pipe.split.seen[np.arange(len(target)), target]).ravel()  # target seen
    others = view.n_items - 1 - (np.diff(pipe.split.seen.indptr) - kept)  # [E] rankable
    for m in models:
        full = pipe.full[m]
        assert full.shape == sampled[m].shape
        assert (full >= 0).all() and (full <= others).all()
        assert full.mean() > sampled[m].mean()          # 1 + 20 candidates vs every item
    again = Pipeline(view, cfg.protocol, c)
    again.run(("din", "mcsf-fast"))
    assert np.array_equal(again.full["mcsf-fast"], pipe.full["mcsf-fast"])
    # the first 3 devices' events only: the same ranks as among every device's
    some = Pipeline(view, cfg.protocol, replace(c, full_devices=3))
    some.run(("din",))
    first3 = pipe.split.test.owner < 3
    assert first3.sum() == 15 and np.array_equal(some.full["din"], pipe.full["din"][first3])
    # without the option nothing is fully ranked
    plain = Pipeline(view, cfg.protocol, CentralOptions(fast_pretrain=2, fast_epochs=1))
    assert np.array_equal(plain.run(("din",))["din"], sampled["din"]) and plain.full == {}
