"""CoDA end to end: what travels (payload audit: nothing up, samples without user ids down),
the privacy summary, a cohort equal to one device per client, resume, failures counted, bad
options; and the same numbers through Flower as through the plain loop (slow)."""

from __future__ import annotations

import json

import pytest

from clients.coda_device import BOUNDS, GLOBAL, MATCHED
from experiments import run as er
from experiments.plain_loop import run_in_process
from fedrec.coda.data import decode, unpack_batches
from fedrec.errors import ConfigError
from fedrec.payload import BROADCAST, split_scopes, unpack
from fedrec.protocol import END, FIT
from fedrec.results import read_rounds, read_summary
from strategies.messages import read_reply
from tests.coda.cases import TINY

TIMING = ("elapsed_s", "eta_s", "fit_s", "round_s")


def clean(recs: list[dict]) -> list[dict]:
    skip = lambda k: k.endswith(("wall_s", "_s_per_device")) or k in TIMING or k.startswith("match_") \
        and k.endswith("_s")
    return [{k: v for k, v in r.items() if not skip(k)} for r in recs]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("coda")
    return run_in_process({**TINY, "output-dir": str(out), "run-name": "r"}, out / "r",
                          record=True), out / "r"


def test_nothing_leaves_a_device_and_matched_samples_carry_no_user_id(run):
    result, _ = run
    sent, received = {}, 0
    kinds = [kind for _, kind, _, _, _ in result.transport.seen]
    assert set(kinds) == {FIT, END} and kinds.count(FIT) == 3 * 4      # 3 days, 4 clients
    for _, kind, _, msg, reply in result.transport.seen:
        if kind == END:
            continue
        for r in read_reply(reply)[0]:
            assert r.upload == {} and r.state is None           # nothing up; state stays
        arrays, header = unpack(msg)
        for scope, named in split_scopes(arrays).items():
            if scope == BROADCAST:                               # the cloud model M0 only
                assert all(k.startswith(GLOBAL) for k in named)
                continue
            assert set(named) == {MATCHED, BOUNDS}               # one device's own arrays
            sent[(header["round"], int(scope))] = named
    assert sent, "the CoDA arm must send matched samples"
    for got in sent.values():
        batches = unpack_batches(got[MATCHED], got[BOUNDS])
        assert 1 <= len(batches) <= 6 and all(len(decode(b, 6)) <= 16 for b in batches)
        received += sum(len(decode(b, 6)) for b in batches)
    summary = json.loads((run[1] / "coda_privacy.json").read_text())
    assert summary["samples_total"] == received
    assert summary["devices_receiving"] == len({d for _, d in sent})


def test_the_round_records_say_what_each_day_did(run):
    _, run_dir = run
    recs = read_rounds(run_dir)
    assert [r["day"] for r in recs] == [3, 4, 5]
    for r in recs:
        assert r["bytes_up"] == 0 and r["devices_failed"] == 0
        assert r["active_devices"] > 0 and 0.0 <= r["test_gauc"] <= 1.0
        assert r["agg_received_mean"] > 0 and r["match_devices_matched"] > 0
        assert r["match_store_dedup_bytes"] < r["match_store_copies_bytes"]
    assert read_summary(run_dir)["status"] == "finished"
    assert "test_gauc" in read_summary(run_dir)["final"]
    rows = (run_dir / "coda_days.csv").read_text().splitlines()    # one per active device-day
    assert rows[0].startswith("device_id,day,n,clicks,top_clicks")
    assert len(rows) - 1 == sum(r["active_devices"] for r in recs)


def test_a_cohort_of_devices_equals_one_device_per_client(run, tmp_path):
    result, _ = run
    alone = run_in_process({**TINY, "devices-per-client": 1, "output-dir": str(tmp_path),
                            "run-name": "one"}, tmp_path / "one")
    a, b = clean(result.strategy.log.records), clean(alone.strategy.log.records)
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6, nan_ok=True), k


def test_the_local_and_cloud_arms(tmp_path):
    local = run_in_process({**TINY, "coda-arm": "local", "output-dir": str(tmp_path),
                            "run-name": "l"}, tmp_path / "l", record=True)
    for _, _, _, msg, _ in local.transport.seen:               # no matched samples sent
        assert not any(k.endswith(MATCHED) for k in unpack(msg)[0])
    recs = local.strategy.log.records
    assert all("match_users" not in r for r in recs)
    assert sum(r["agg_devices_trained"] for r in recs) > 0
    cloud = run_in_process({**TINY, "coda-arm": "cloud", "output-dir": str(tmp_path),
                            "run-name": "c"}, tmp_path / "c").strategy.log.records
    for r in cloud:                                             # M is M0: the same scores
        assert r["agg_devices_trained"] == 0
        assert r["test_gauc"] == r["test_cloud_gauc"] and r["test_ctr@k"] == r["test_cloud_ctr@k"]


def test_a_resumed_run_replays_round_2_like_the_undisturbed_run(tmp_path):
    """The cloud's checkpoint after day 1 and the devices' state of day 1 (tables,
    classifier, M) are everything day 2 needs."""
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
    b = cls(cfg=cfg, fed=fed, recorder=RunRecorder(tmp_path / "a"))   # the same run resumed
    b.load_state(rnd, state)
    run_round(b, 2, transport)
    assert rnd == 1 and clean([b.log.records[-1]]) == clean([a.log.records[-1]])


@pytest.mark.parametrize(("key", "count"), [("fault-crash", "devices_failed"),
                                            ("fault-unavailable", "devices_dropped")])
def test_failing_and_unavailable_devices_are_counted_and_the_day_goes_on(tmp_path, key, count):
    """A device that crashes or is away on day d keeps its day-(d-1) state and files the
    missed days' samples the next day it runs."""
    res = run_in_process({**TINY, key: 0.3, "output-dir": str(tmp_path), "run-name": "f"},
                         tmp_path / "f")
    recs = res.strategy.log.records
    assert sum(r[count] for r in recs) > 0
    assert all(r["devices_ok"] + r["devices_failed"] + r["devices_dropped"] == r["devices_selected"]
               for r in recs)
    assert all(r["active_devices"] <= r["devices_ok"] for r in recs)


@pytest.mark.parametrize(("key", "value", "match"), [
    ("coda-arm", "both", "coda-arm"),
    ("coda-neighbours", "close", "coda-neighbours"),
    ("coda-sigma", 1.5, "coda-sigma"),
    ("coda-batch-max", 5, "batch-max"),
    ("coda-valid-age", 9, "valid-age"),
    ("coda-exposures", 0, "coda-exposures"),
    ("model", "mf", "DIN"),
])
def test_bad_options_are_one_line_errors(key, value, match):
    from experiments.setup import effective_config, resolve

    with pytest.raises(ConfigError, match=match):
        resolve(effective_config({}, {**TINY, key: value}))


@pytest.mark.parametrize(("sets", "match"), [
    ({"num-rounds": 30}, "lower num-rounds to 7"),
    ({"coda-first-day": 0}, "no sample before"),
])
def test_impossible_days_fail_before_the_run(tmp_path, sets, match):
    with pytest.raises(ConfigError, match=match):
        run_in_process({**TINY, **sets, "output-dir": str(tmp_path), "run-name": "x"}, tmp_path / "x")
    assert not (tmp_path / "x" / "rounds.jsonl").exists()


@pytest.mark.realdata
def test_data_without_timestamps_is_refused(shared_data, tmp_path):
    with pytest.raises(ConfigError, match="timestamps"):
        run_in_process({**TINY, "dataset": "steam", "output-dir": str(tmp_path),
                        "run-name": "x"}, tmp_path / "x")


@pytest.mark.slow
def test_flower_and_the_plain_loop_give_the_same_rounds(tmp_path):
    args = []
    for key, value in {**TINY, "output-dir": str(tmp_path), "run-name": "flwr"}.items():
        args += ["--set", f"{key}={value}"]
    assert er.main(args) == 0                                   # the default engine: flwr run
    loop = run_in_process({**TINY, "output-dir": str(tmp_path), "run-name": "loop"}, tmp_path / "loop")
    assert clean(read_rounds(tmp_path / "flwr")) == clean(loop.strategy.log.records)


def test_fraction_fit_samples_among_the_devices_with_local_samples(run, tmp_path):
    result, _ = run
    half = run_in_process({**TINY, "fraction-fit": 0.5, "output-dir": str(tmp_path),
                           "run-name": "h"}, tmp_path / "h").strategy
    for rnd, (a, b) in enumerate(zip(half.log.records, result.strategy.log.records, strict=True), 1):
        assert 0 < a["devices_selected"] < b["devices_selected"]
        assert set(half.select_fit_devices(rnd)) <= set(result.strategy.has_local(rnd).tolist())


def test_each_day_files_the_samples_logged_the_day_before(tmp_path):
    """Day d's local table holds the device's samples of day d-1 (logged after it served on
    day d-1), and none of day d itself."""
    from clients.coda_device import DAY, ORIGIN, CoDADevice
    from experiments.setup import effective_config, resolve
    from fedrec.coda.data import data_origin, device_log
    from fedrec.protocol import DeviceTask, device_rng

    cfg, cls = resolve(effective_config({}, {**TINY, "coda-arm": "local", "coda-local-cap": 10_000}))
    fed = cls.prepare_data(cfg)
    logic = CoDADevice(cfg, fed)
    origin = data_origin(int(fed.cloud().logs.ts.min()), -1)
    strategy = cls(cfg=cfg, fed=fed, recorder=__import__("fedrec.results").results.RunRecorder(tmp_path))
    dev = max(range(fed.n_devices), key=lambda d: len(fed.device(d).items))
    day_of = device_log(fed.device(dev), origin, 86_400).day
    state = None
    for day in (3, 4, 5):
        task = DeviceTask(dev, day - 2, FIT, strategy.global_arrays, {}, state,
                          {DAY: day, ORIGIN: origin}, device_rng(0, day, dev, FIT))
        state = logic.run_many([task])[0].state
        filed = set(day_of[state["local"]].tolist())
        assert max(filed) == day - 1 and day not in filed
        assert (day_of == day - 1).sum() == 0 or day - 1 in filed
    assert set(day_of[state["local"]].tolist()) >= {d for d in (2, 3, 4) if (day_of == d).any()}
