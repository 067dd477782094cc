"""A protocol with its own phases, defined here and nowhere else: a device phase ("count"), a
cloud-only step ("normalise") and a second device phase ("rank", which evaluates). It runs
through Flower and through the plain loop with identical results, touching no shared file."""

from __future__ import annotations

import numpy as np
import pytest

from clients.device import DeviceLogic
from experiments import run as er
from experiments.plain_loop import plain_loop
from fedrec.metrics import rank_metrics, ranks_from_scores
from fedrec.payload import SparseRows, add_sparse, get_sparse
from fedrec.protocol import DeviceReply, DeviceTask
from fedrec.results import read_rounds, read_summary
from strategies.aggregation import sparse_row_sums
from strategies.base import DeviceStrategy, Phase

COUNT, NORMALISE, RANK = "count", "normalise", "rank"


class PopularityDevice(DeviceLogic):
    """count: upload the items it interacted with, remember how often it took part;
    rank: rank its held-out items by the cloud's normalised popularity."""

    def handlers(self):
        return {COUNT: self.count, RANK: self.rank}

    def fit(self, task: DeviceTask) -> DeviceReply:
        raise NotImplementedError("this protocol has no fit phase")

    def count(self, task: DeviceTask) -> DeviceReply:
        items = np.unique(self.fed.device(task.device_id).train_items)       # [K]
        upload: dict[str, np.ndarray] = {}
        add_sparse(upload, "counts", SparseRows(items, np.ones((len(items), 1), np.float32)))
        times = 1 + (0 if task.state is None else int(task.state["times"][0]))
        return DeviceReply(device_id=task.device_id, upload=upload, num_examples=len(items),
                           state={"times": np.array([times])},
                           metrics={"times": float(times), "draw": float(task.rng.random())})

    def rank(self, task: DeviceTask) -> DeviceReply:
        data = self.fed.device(task.device_id)
        pop = task.broadcast["pop"]                                           # [n_items]
        metrics = {}
        for split, target in (("valid", data.valid_item), ("test", data.test_item)):
            candidates = np.concatenate([[target], data.negatives])          # [1 + N]
            ranks = ranks_from_scores(pop[candidates][None, :], 0)
            metrics.update({f"{split}_{k.lower()}": float(v[0])
                            for k, v in rank_metrics(ranks, (10,)).items()})
        return DeviceReply(device_id=task.device_id, metrics=metrics)


class TwoPhase(DeviceStrategy):
    name = "twophase"
    device_cls = PopularityDevice

    def phases(self) -> tuple[Phase, ...]:
        return (Phase(COUNT, available_only=True), Phase(NORMALISE, device=False),
                Phase(RANK, evaluates=True))

    def init_global(self) -> dict[str, np.ndarray]:
        self.counts = np.zeros((self.cloud.n_items, 1))                       # float64 [I, 1]
        return {"pop": np.zeros(self.cloud.n_items, np.float32)}

    def aggregate(self, rnd, replies):
        raise NotImplementedError("no fit phase")

    def select(self, phase: Phase, rnd: int) -> list[int]:
        if phase.name == COUNT:
            return self.select_fit_devices(rnd)
        return super().select(phase, rnd)

    def phase_broadcast(self, phase: Phase, rnd: int) -> dict[str, np.ndarray]:
        return {"pop": self.global_arrays["pop"]} if phase.name == RANK else {}

    def on_phase(self, phase: Phase, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        sums, _ = sparse_row_sums(self.cloud.n_items, [get_sparse(r.upload, "counts") for r in replies])
        self.counts += sums
        return {"uploads": float(len(replies)),
                "mean_times": float(np.mean([r.metrics["times"] for r in replies]))}

    def cloud_step(self, phase: Phase, rnd: int) -> dict[str, float]:
        total = self.counts.sum()
        self.global_arrays["pop"] = (self.counts[:, 0] / max(total, 1.0)).astype(np.float32)
        return {"items_seen": float((self.counts > 0).sum())}


COMMON = {"synthetic-size": "tiny", "eval-negatives": 20, "num-rounds": 3, "quiet": True,
          "devices-per-client": 8, "fraction-fit": 0.5, "simulate-dropouts": False,
          "strategy": f"{__name__}:TwoPhase"}


def comparable(records: list[dict]) -> list[dict]:
    timing = lambda k: k.endswith("wall_s") or k in ("elapsed_s", "eta_s", "fit_s", "round_s")
    return [{k: v for k, v in r.items() if not timing(k)} for r in records]


@pytest.mark.slow
def test_a_protocol_of_its_own_phases_runs_the_same_through_flower_and_the_plain_loop(tmp_path):
    args = ["--engine", "inprocess"]
    for key, value in {**COMMON, "output-dir": str(tmp_path), "run-name": "flwr"}.items():
        args += ["--set", f"{key}={value}"]
    assert er.main(args) == 0
    loop = plain_loop({**COMMON, "output-dir": str(tmp_path), "run-name": "loop"},
                      str(tmp_path / "loop"), verbose=False)
    flower = read_rounds(tmp_path / "flwr")
    assert comparable(flower) == comparable(loop)
    assert [r["round"] for r in flower] == [1, 2, 3]
    for r in flower:
        assert r["count_devices_ok"] == 15 and r["count_uploads"] == 15   # half of 30 devices
        assert r["count_bytes_up"] > 0 and r["normalise_items_seen"] > 0
        assert r["eval_devices"] == 30 and 0 <= r["test_hr@10"] <= 1
    assert flower[-1]["count_mean_times"] > 1.0          # private state carried across rounds
    assert read_summary(tmp_path / "flwr")["status"] == "finished"
