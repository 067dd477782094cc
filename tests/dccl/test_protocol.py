"""DCCL end to end: what travels (payload audit), what the rounds report, resume-safe state,
bad options; and the same numbers through Flower as through the plain loop (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clients.dccl_device import (
    EVAL_ITEM_IDS,
    ITEM_IDS,
    ITEM_ROWS,
    ITEM_TABLE,
    ITEMS,
    THETA,
    THETA_START,
)
from experiments import run as er
from experiments.plain_loop import run_in_process
from fedrec.errors import ConfigError
from fedrec.payload import nbytes, unpack
from fedrec.protocol import EVALUATE, FIT
from fedrec.results import read_rounds, read_summary
from strategies.messages import read_reply
from tests.dccl.cases import TINY


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dccl")
    return run_in_process({**TINY, "output-dir": str(out), "run-name": "r"}, out / "r", record=True), out / "r"


def test_only_the_metapatch_leaves_a_device(run):
    result, _ = run
    fits = [read_reply(reply)[0] for _, kind, _, _, reply in result.transport.seen if kind == FIT]
    replies = [r for batch in fits for r in batch]
    assert len(replies) == 2 * 30                                   # every device, both rounds
    for r in replies:
        assert set(r.upload) == {THETA}
        assert r.upload[THETA].shape == (4,) and r.upload[THETA].dtype == np.float32
        assert r.state is None                                      # state stays on the host
    evals = [read_reply(reply)[0] for _, kind, _, _, reply in result.transport.seen if kind == EVALUATE]
    assert all(not r.upload for batch in evals for r in batch)      # evaluation uploads nothing


def test_each_device_gets_its_own_starting_metapatch(run):
    result, _ = run
    starts = {}
    for _, kind, _, msg, _ in result.transport.seen:
        if kind == FIT:
            arrays, header = unpack(msg)
            for d in header["devices"]:
                starts[d] = arrays[f"{d}/{THETA_START}"]
    assert len(starts) == 30 and all(s.shape == (4,) for s in starts.values())
    assert len({s.tobytes() for s in starts.values()}) > 1         # U(theta, u) per device


def test_rounds_report_dccl_e_dccl_m_and_f_and_the_device_file(run):
    _, run_dir = run
    rounds = read_rounds(run_dir)
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        for key in ("test_hr@10", "agg_e_test_hr@10", "agg_f_test_hr@10", "fm_test_hr@10",
                    "momodistill_f_loss", "momodistill_basis_loss"):
            assert 0 <= r[key] < 10, key
        up = nbytes({THETA: np.zeros(4, np.float32)})                # K floats + npy header
        assert r["devices_ok"] == 30 and r["bytes_up"] == 30 * up
    assert "test_full_hr@10" in rounds[-1] and "test_full_hr@10" not in rounds[0]
    facts = json.loads((run_dir / "dccl_cloud.json").read_text())
    assert facts["device_trainable"] == 4 and facts["direct_patch_parameters"] == 76 + 22 + 76   # 8->4->8, 4->2->4, 8->4->8
    header = (run_dir / "dccl_devices.csv").read_text().splitlines()
    assert len(header) == 31 and "e_test_auc" in header[0] and "train_events" in header[0]
    assert read_summary(run_dir)["status"] == "finished"


def test_metapatch_moves_and_the_same_config_gives_the_same_run(run, tmp_path):
    result, _ = run
    again = run_in_process({**TINY, "output-dir": str(tmp_path), "run-name": "r"}, tmp_path / "r")
    timing = lambda k: k.endswith("wall_s") or k in ("elapsed_s", "eta_s", "fit_s", "round_s")
    clean = lambda recs: [{k: v for k, v in r.items() if not timing(k)} for r in recs]
    assert clean(again.strategy.log.records) == clean(result.strategy.log.records)
    assert np.abs(result.strategy.thetas).max() > 0


@pytest.mark.parametrize("key,value,match", [
    ("dccl-theta-init", "random", "theta-init"),
    ("dccl-junctions", "1,4", "beyond"),
    ("dccl-hidden", "32,x", "positive integers"),
    ("dccl-negatives", 0, "negatives"),
    ("model", "mf", "PatchedDIN"),
    ("ldp", "laplace", "protects nothing"),
    ("dccl-item-rows", "some", "item-rows"),
    ("dccl-item-rows", "needed", "full-ranking = false"),
])
def test_bad_options_are_one_line_errors(key, value, match):
    from experiments.setup import effective_config, resolve

    with pytest.raises(ConfigError, match=match):
        resolve(effective_config({}, {**TINY, key: value}))


@pytest.mark.slow
def test_flower_and_the_plain_loop_give_the_same_rounds(tmp_path):
    args = ["--engine", "inprocess"]
    for key, value in {**TINY, "output-dir": str(tmp_path), "run-name": "flwr"}.items():
        args += ["--set", f"{key}={value}"]
    assert er.main(args) == 0
    loop = run_in_process({**TINY, "output-dir": str(tmp_path), "run-name": "loop"}, tmp_path / "loop")
    timing = lambda k: k.endswith("wall_s") or k in ("elapsed_s", "eta_s", "fit_s", "round_s")
    clean = lambda recs: [{k: v for k, v in r.items() if not timing(k)} for r in recs]
    assert clean(read_rounds(tmp_path / "flwr")) == clean(loop.strategy.log.records)


def test_a_cohort_of_devices_equals_one_device_at_a_time(run):
    """The host's cohort path (one batched MetaPatch for 30 devices) gives each device the
    metapatch and metrics it gets alone."""
    from experiments.plain_loop import run_devices
    from strategies.dccl import DCCL

    result, _ = run
    s, cfg = result.strategy, result.cfg
    logic = DCCL.device_cls(cfg, DCCL.prepare_data(cfg))
    ids = list(range(30))
    own = {d: {THETA_START: s.theta_start[d]} for d in ids}
    whole, alone = (run_devices(logic, FIT, 1, ids, s.global_arrays, own, 0, {}, cohort)
                    for cohort in (30, 1))
    for a, b in zip(whole, alone, strict=True):
        np.testing.assert_allclose(a.upload[THETA], b.upload[THETA], rtol=1e-5, atol=1e-6)
        assert a.num_examples == b.num_examples > 0
        for k in a.metrics:
            assert a.metrics[k] == pytest.approx(b.metrics[k], abs=1e-5), k


def test_a_resumed_run_replays_round_2_like_the_undisturbed_run(tmp_path):
    """The checkpoint after round 1 (metapatches, starting metapatches, f and Theta, the round
    log) is everything round 2 needs: a fresh strategy loaded from it (its own pre-training
    redone) ends round 2 exactly as the undisturbed run."""
    import pickle

    from clients.host import DeviceHost
    from experiments.setup import device_profiles, effective_config, resolve
    from fedrec.results import RunRecorder
    from strategies.driver import InProcessTransport, run_round

    flat = effective_config({}, {**TINY, "output-dir": str(tmp_path)})
    cfg, cls = resolve(flat)
    fed = cls.prepare_data(cfg)
    profiles = device_profiles(fed.n_devices, cfg.sim.device_mix, cfg.train.seed)
    host = DeviceHost(cls.device_cls(cfg, fed), profiles.__getitem__, cfg.train.seed, dropouts=False,
                      state_root=str(tmp_path / "state"))
    a = cls(cfg=cfg, fed=fed, recorder=RunRecorder(tmp_path / "a"))
    transport = InProcessTransport([lambda nd: host.fit(nd, {})[0]] * a.expected_clients)
    run_round(a, 1, transport)
    rnd, state = a.recorder.load_checkpoint()
    state = pickle.loads(pickle.dumps(state))
    run_round(a, 2, transport)
    b = cls(cfg=cfg, fed=fed, recorder=RunRecorder(tmp_path / "b"))
    b.load_state(rnd, state)
    run_round(b, 2, transport)
    timing = lambda k: k.endswith("wall_s") or k in ("elapsed_s", "eta_s", "fit_s", "round_s")
    clean = lambda r: {k: v for k, v in r.items() if not timing(k)}
    assert rnd == 1 and clean(b.log.records[-1]) == clean(a.log.records[-1])
    np.testing.assert_array_equal(b.thetas, a.thetas)


def test_needed_item_rows_give_the_same_run_with_fewer_bytes_down(tmp_path):
    """dccl-item-rows = needed: each device names the item rows it will read (one request
    phase), is sent only those, and trains and scores exactly as with the whole table."""
    base = {**TINY, "dccl-full-ranking": False, "output-dir": str(tmp_path)}
    whole = run_in_process({**base, "run-name": "all"}, tmp_path / "all")
    lean = run_in_process({**base, "run-name": "needed", "dccl-item-rows": "needed"},
                          tmp_path / "needed", record=True)
    skip = lambda k: (k.endswith("wall_s") or k.startswith(("bytes_down", "items_", "sim_", "energy"))
                      or k in ("elapsed_s", "eta_s", "fit_s", "round_s", "transfer_s"))
    clean = lambda recs: [{k: v for k, v in r.items() if not skip(k)} for r in recs]
    assert clean(lean.strategy.log.records) == clean(whole.strategy.log.records)
    for a, b in zip(lean.strategy.log.records, whole.strategy.log.records, strict=True):
        assert 0 < a["bytes_down"] < b["bytes_down"]
    kinds = [kind for _, kind, _, _, _ in lean.transport.seen]
    assert kinds.count(ITEMS) == kinds.count(FIT) > 0
    n_items = whole.strategy.cloud.n_items
    sent: dict[str, dict[int, int]] = {FIT: {}, EVALUATE: {}}
    for _, kind, _, msg, reply in lean.transport.seen:
        arrays, _ = unpack(msg)
        assert ITEM_TABLE not in arrays                             # the table never travels
        for r in read_reply(reply)[0]:
            if kind == ITEMS:                                       # a request: ids only
                assert set(r.upload) == {ITEM_IDS, EVAL_ITEM_IDS}
                assert 0 < len(r.upload[EVAL_ITEM_IDS]) <= len(r.upload[ITEM_IDS]) < n_items
                assert set(r.upload[EVAL_ITEM_IDS]) <= set(r.upload[ITEM_IDS])
            else:
                ids = arrays[f"{r.device_id}/{ITEM_IDS}"]
                assert arrays[f"{r.device_id}/{ITEM_ROWS}"].shape == (len(ids), 4)
                assert set(r.upload) <= {THETA}
                sent[kind][r.device_id] = len(ids)
    assert all(sent[EVALUATE][d] <= sent[FIT][d] for d in sent[FIT])  # evaluation reads fewer
    assert sum(sent[EVALUATE].values()) < sum(sent[FIT].values())


def test_a_device_refuses_to_run_without_an_item_row_it_reads(tmp_path):
    from experiments.plain_loop import run_devices
    from strategies.dccl import DCCL

    cfg = {**TINY, "dccl-full-ranking": False, "dccl-item-rows": "needed",
           "output-dir": str(tmp_path), "run-name": "r", "num-rounds": 1}
    s = run_in_process(cfg, tmp_path / "r").strategy
    logic = DCCL.device_cls(s.cfg, DCCL.prepare_data(s.cfg))
    asked = run_devices(logic, ITEMS, 1, [3], {}, {}, 0, {}, 1)[0].upload[ITEM_IDS]
    table = s.global_arrays[ITEM_TABLE]
    short = asked[1:].astype(np.int64)                               # one row left out
    own = {3: {THETA_START: s.theta_start[3], ITEM_IDS: short.astype(np.int32),
               ITEM_ROWS: table[short]}}
    broadcast = {k: v for k, v in s.global_arrays.items() if k != ITEM_TABLE}
    with pytest.raises(ValueError, match=f"did not send .*item {asked[0]}"):
        run_devices(logic, FIT, 1, [3], broadcast, own, 0, {}, 1)
    with pytest.raises(ValueError, match="got no item rows"):           # no request, no rows
        run_devices(logic, FIT, 1, [3], broadcast, {3: {THETA_START: s.theta_start[3]}}, 0, {}, 1)
