"""MC-SF through the device-cloud house: what travels (payload audit), what a round records,
cohorts = one device per client, local fast models, failing devices, resume, bad options; the
same numbers through Flower as through the plain loop (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clients.mcsf_device import (
    EVAL_CAND,
    EVAL_EVENTS,
    FAST,
    FIT_CAND,
    FIT_EVENTS,
    MEM,
    MEM_POINT,
    RC,
    RE,
    SLOW,
    TABLE,
    UPLOAD,
)
from experiments import run as er
from experiments.plain_loop import run_in_process
from fedrec.errors import ConfigError
from fedrec.payload import BROADCAST, split_scopes, unpack
from fedrec.protocol import END, EVALUATE, FIT
from fedrec.results import read_rounds, read_summary
from strategies.messages import read_reply
from tests.mcsf.cases import TINY

TIMING = ("elapsed_s", "eta_s", "fit_s", "round_s")


def clean(recs: list[dict]) -> list[dict]:
    skip = lambda k: k.endswith(("wall_s", "_s_per_device")) or k in TIMING
    return [{k: v for k, v in r.items() if not skip(k)} for r in recs]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mcsf")
    return run_in_process({**TINY, "output-dir": str(out), "run-name": "r"}, out / "r",
                          record=True), out / "r"


def test_payload_audit_what_goes_up_and_down(run):
    """Up: the negative memory (d floats per upload point), the candidate ids it asks about,
    the fast-model deltas; never a click or exposure window, an item row or a label. Down: E,
    the fast model, and per device r_c, r_e (d floats each per candidate) and the slow logits."""
    result, _ = run
    d, C = TINY["mcsf-dim"], 1 + 1 + 1
    fast_keys = {k for k in result.strategy.global_arrays if k.startswith(FAST)}
    seen = {UPLOAD: 0, FIT: 0, EVALUATE: 0}
    for _, kind, _, msg, reply in result.transport.seen:
        if kind == END:
            continue
        seen[kind] += 1
        arrays, _ = unpack(msg)
        for scope, named in split_scopes(arrays).items():
            if scope == BROADCAST:
                assert set(named) == {TABLE} | fast_keys
            elif kind == FIT:
                assert set(named) == {RC, RE} and named[RC].shape[1:] == (C, d)
            elif kind == EVALUATE:
                assert set(named) == {RC, RE, SLOW}
                assert named[RC].shape == (5, 1 + TINY["eval-negatives"], d)
            else:
                raise AssertionError(f"{kind} sent {sorted(named)} to one device")
        for r in read_reply(reply)[0]:
            if kind == UPLOAD:
                assert set(r.upload) == {MEM, MEM_POINT, FIT_EVENTS, FIT_CAND, EVAL_EVENTS, EVAL_CAND}
                assert r.upload[MEM].shape == (len(r.upload[MEM_POINT]), d)
                assert r.upload[MEM].dtype == np.float32 and r.upload[FIT_CAND].dtype == np.int32
            elif kind == FIT:
                assert set(r.upload) == fast_keys and r.state is None
            else:
                assert r.upload == {} and set(r.metrics) >= {"test_ndcg@5", "test_slow_ndcg@5"}
    assert seen == {UPLOAD: 2 * 2, FIT: 2 * 2, EVALUATE: 2 * 2}      # 2 rounds x 2 clients


def test_the_round_records_and_summary(run):
    _, run_dir = run
    recs = read_rounds(run_dir)
    assert len(recs) == 2 and read_summary(run_dir)["status"] == "finished"
    for r in recs:
        assert r["devices_failed"] == 0 and r["f2s_devices_ok"] == r["devices_selected"]
        assert r["slow_devices"] == r["devices_selected"] and r["slow_loss"] > 0
        assert 0 < r["test_ndcg@5"] <= 1 and 0 < r["test_slow_ndcg@5"] <= 1
        assert r["bytes_up"] > 0 and r["f2s_bytes_up"] > 0
    facts = json.loads((run_dir / "mcsf_cloud.json").read_text())
    assert facts["cloud_events"] > 0 and len(facts["slow_loss"]) == 2
    assert recs[0]["test_ndcg@5"] != recs[1]["test_ndcg@5"]             # the fast model moved


def test_a_cohort_of_devices_equals_one_device_per_client(run, tmp_path):
    result, _ = run
    alone = run_in_process({**TINY, "devices-per-client": 1, "output-dir": str(tmp_path),
                            "run-name": "one"}, tmp_path / "one")
    a, b = clean(result.strategy.log.records), clean(alone.strategy.log.records)
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6, nan_ok=True), k


def test_local_fast_models_upload_nothing_but_the_memory(tmp_path):
    res = run_in_process({**TINY, "mcsf-fast-train": "local", "output-dir": str(tmp_path),
                          "run-name": "l"}, tmp_path / "l", record=True)
    for _, kind, _, _, reply in res.transport.seen:
        if kind == FIT:
            assert all(r.upload == {} for r in read_reply(reply)[0])
    recs = res.strategy.log.records
    assert all(r["bytes_up"] == 0 for r in recs)


@pytest.mark.parametrize("sets", [{"mcsf-f2s": False}, {"mcsf-s2f": False},
                                  {"mcsf-reweight": "vector"}])
def test_the_switchable_blocks_run(tmp_path, sets):
    res = run_in_process({**TINY, **sets, "num-rounds": 1, "output-dir": str(tmp_path),
                          "run-name": "s"}, tmp_path / "s", record=True)
    rec = res.strategy.log.records[-1]
    assert rec["devices_failed"] == 0 and rec["test_ndcg@5"] > 0
    if sets.get("mcsf-s2f") is False:       # nothing per candidate in the fit message
        for _, kind, _, msg, _ in res.transport.seen:
            if kind == FIT:
                assert not any(k.endswith(RC) for k in unpack(msg)[0])


@pytest.mark.parametrize(("key", "count"), [("fault-crash", "devices_failed"),
                                            ("fault-unavailable", "devices_dropped")])
def test_failing_and_unavailable_devices_are_counted(tmp_path, key, count):
    res = run_in_process({**TINY, key: 0.3, "output-dir": str(tmp_path), "run-name": "f"},
                         tmp_path / "f")
    recs = res.strategy.log.records
    assert sum(r[count] for r in recs) > 0
    assert all(r["devices_ok"] + r["devices_failed"] + r["devices_dropped"] == r["devices_selected"]
               for r in recs)


def test_a_resumed_run_replays_round_2_like_the_undisturbed_run(tmp_path):
    import pickle

    from clients.host import DeviceHost
    from experiments.setup import device_profiles, effective_config, resolve
    from fedrec.results import RunRecorder
    from strategies.driver import InProcessTransport, run_round

    flat = effective_config({}, {**TINY, "output-dir": str(tmp_path)})
    cfg, cls = resolve(flat)
    fed = cls.prepare_data(cfg)
    profiles = device_profiles(fed.n_devices, cfg.sim.device_mix, cfg.train.seed)
    host = DeviceHost(cls.device_cls(cfg, fed), profiles.__getitem__, cfg.train.seed,
                      dropouts=False, state_root=str(tmp_path / "state"))
    a = cls(cfg=cfg, fed=fed, recorder=RunRecorder(tmp_path / "a"))
    transport = InProcessTransport([lambda nd: host.fit(nd, {})[0]] * a.expected_clients)
    run_round(a, 1, transport)
    rnd, state = a.recorder.load_checkpoint()
    state = pickle.loads(pickle.dumps(state))
    run_round(a, 2, transport)
    b = cls(cfg=cfg, fed=fed, recorder=RunRecorder(tmp_path / "a"))
    b.load_state(rnd, state)
    run_round(b, 2, transport)
    assert rnd == 1 and clean([b.log.records[-1]]) == clean([a.log.records[-1]])


@pytest.mark.parametrize(("key", "value", "match"), [
    ("mcsf-exposure-negatives", 5, "exposure-negatives"),
    ("mcsf-exposures", 0, "mcsf-exposures"),
    ("mcsf-reweight", "softmax", "mcsf-reweight"),
    ("mcsf-fast-train", "central", "mcsf-fast-train"),
    ("mcsf-hidden", "8,x", "mcsf-hidden"),
    ("mcsf-dim", 0, "mcsf-dim"),
    ("model", "din", "mcsf trains"),
    ("ldp", "laplace", "ldp"),
])
def test_bad_options_are_one_line_errors(key, value, match):
    from experiments.setup import effective_config, resolve

    with pytest.raises(ConfigError, match=match):
        resolve(effective_config({}, {**TINY, key: value}))


@pytest.mark.slow
def test_flower_and_the_plain_loop_give_the_same_rounds(tmp_path):
    args = []
    for key, value in {**TINY, "output-dir": str(tmp_path), "run-name": "flwr"}.items():
        args += ["--set", f"{key}={value}"]
    assert er.main(args) == 0                                   # the default engine: flwr run
    loop = run_in_process({**TINY, "output-dir": str(tmp_path), "run-name": "loop"}, tmp_path / "loop")
    assert clean(read_rounds(tmp_path / "flwr")) == clean(loop.strategy.log.records)
