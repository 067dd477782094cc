"""Every registered strategy's cloud side reads only its view's ``cloud()``.

Each strategy is built on a ``RecordingView`` of its data (synthetic tiny) and runs one
round with real messages (every phase) while its devices read the unwrapped view, as a
Flower client would; the only thing the strategy may take from the view is ``cloud()``
(DeviceStrategy keeps that and nothing else of the data).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from experiments.setup import effective_config, resolve
from fedrec.results import RunRecorder
from fedrec.views import RecordingView, cloud_names, cloud_reads, reads_outside_cloud
from strategies.registry import STRATEGIES
from tests.c3drec.cases import BASE as C3DREC_TINY
from tests.c3drec.cases import one_round
from tests.dccl.cases import TINY as DCCL_TINY
from tests.mcsf.cases import TINY as MCSF_TINY

TINY = {"dataset": "synthetic", "synthetic-size": "tiny", "simulate-dropouts": False,
        "num-rounds": 1, "quiet": True, "devices-per-client": 8, "eval-negatives": 5,
        "embedding-dim": 4, "local-epochs": 1}


def flat(name: str) -> dict[str, Any]:
    extra = (C3DREC_TINY if name.startswith("c3drec") else DCCL_TINY if name == "dccl"
             else MCSF_TINY if name == "mcsf" else TINY)
    return effective_config({}, {**extra, "strategy": name})


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_reads_only_the_cloud_view(name: str, tmp_path) -> None:
    torch.set_num_threads(1)
    cfg, cls = resolve(flat(name))
    fed = cls.prepare_data(cfg)
    logic = cls.device_cls(cfg, fed)                   # devices read the real view

    def one_round_on(proxy: RecordingView) -> None:
        strategy = cls(cfg=cfg, fed=proxy, recorder=RunRecorder(tmp_path / name))
        one_round(cfg, strategy, logic)

    reads = cloud_reads(one_round_on, fed)
    assert reads == {"cloud"}, f"{name}'s cloud half reads {sorted(reads)} of the data view"
    assert reads_outside_cloud(reads - {"cloud"}, fed) == set()


def test_recording_view_catches_a_device_read() -> None:
    class View:
        n_devices, n_items = 2, 3

        def device(self, d: int) -> int:
            return d

        def cloud(self) -> object:
            return type("Cloud", (), {"n_devices": 2, "n_items": 3})()

    reads = cloud_reads(lambda v: (v.n_items, v.device(1)), View())
    assert reads == {"n_items", "device"}
    assert reads_outside_cloud(reads, View()) == {"device"}
    assert "n_items" in cloud_names(View().cloud())
    with pytest.raises(AttributeError, match="read-only"):
        RecordingView(View()).n_items = 4
