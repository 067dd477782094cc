"""A tiny DCCL sample view: the synthetic "tiny" preset with the paper's split."""

from __future__ import annotations

import pytest

from fedrec.config import DataConfig
from fedrec.data.synthetic import generate, preset
from fedrec.dccl.config import DCCLConfig
from fedrec.views.samples import SampleView, build_sample_view


@pytest.fixture(scope="session")
def tiny_view() -> SampleView:
    cfg = DCCLConfig(history_len=10).view(DataConfig(eval_negatives=10))
    return build_sample_view(generate(preset("tiny")), cfg)
