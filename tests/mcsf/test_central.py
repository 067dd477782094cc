"""The centralised pipeline (the paper's Tables 2-3 and Fig. 4) on a tiny view."""

from __future__ import annotations

import numpy as np

from fedrec.mcsf.central import FAST_MODELS, SLOW_MODELS, CentralOptions, Pipeline


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
