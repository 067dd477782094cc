"""clients.state.DeviceStateStore: one folder per shard of consecutive device ids, one
atomic file per version, reads as of a version (what makes a killed run resumable)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from clients.state import DeviceStateStore, round_start, version_of


def state(v: float) -> dict[str, np.ndarray]:
    return {"user": np.full(2, v, np.float32)}


def files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def value(got) -> list[float | None]:
    return [None if s is None else float(s["user"][0]) for s in got.values()]


def test_versions_order_rounds_and_kinds():
    assert version_of(1, 0) < version_of(1, 1) < version_of(1, 15) < version_of(2, 0)
    assert version_of(3, 0) == 48 == round_start(3) and version_of(3, 1) == 49
    with pytest.raises(ValueError, match="phase index 16 outside 0..15"):
        version_of(1, 16)


def test_shard_of_groups_consecutive_ids():
    store = DeviceStateStore("/nowhere", shard_size=4)
    assert [store.shard_of(d) for d in range(10)] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]


def test_unknown_devices_load_as_none_without_creating_files(tmp_path):
    store = DeviceStateStore(tmp_path / "s", shard_size=4)
    assert store.load([0, 5, 9]) == {0: None, 5: None, 9: None}
    assert not (tmp_path / "s").exists()


def test_save_writes_one_file_per_shard_and_load_returns_the_states(tmp_path):
    store = DeviceStateStore(tmp_path, shard_size=4)
    store.save({0: state(0), 3: state(3), 4: state(4), 9: state(9)}, version=2)
    v = "v" + "2".zfill(20) + ".pkl"
    assert files(tmp_path) == [f"shard-000000/{v}", f"shard-000001/{v}", f"shard-000002/{v}"]
    with (tmp_path / "shard-000000" / v).open("rb") as fh:
        assert sorted(pickle.load(fh)) == [0, 3]
    got = store.load([9, 3, 1])
    assert list(got) == [9, 3, 1] and got[1] is None
    np.testing.assert_array_equal(got[9]["user"], [9, 9])
    np.testing.assert_array_equal(got[3]["user"], [3, 3])


def test_save_keeps_the_other_devices_of_a_shard(tmp_path):
    store = DeviceStateStore(tmp_path, shard_size=4)
    store.save({0: state(0), 1: state(1)}, version=2)
    store.save({1: state(10), 2: state(2)}, version=4)
    assert value(store.load([0, 1, 2, 3])) == [0, 10, 2, None]


def test_load_reads_the_newest_version_older_than_before(tmp_path):
    store = DeviceStateStore(tmp_path, shard_size=4)
    for rnd in (1, 2, 3):
        store.save({0: state(rnd)}, version=version_of(rnd, 0))
    assert value(store.load([0], before=version_of(1, 0))) == [None]
    assert value(store.load([0], before=version_of(2, 0))) == [1]
    assert value(store.load([0], before=version_of(3, 1))) == [3]


def test_a_replayed_round_ignores_and_replaces_what_a_killed_attempt_wrote(tmp_path):
    # killed in round 3 after writing its fit state; resumed from the checkpoint of round 2
    store = DeviceStateStore(tmp_path, shard_size=4)
    store.save({0: state(1)}, version=version_of(1, 0))
    store.save({0: state(2)}, version=version_of(2, 0), keep_from=version_of(1, 1))
    store.save({0: state(99)}, version=version_of(3, 1), keep_from=version_of(2, 1))
    assert value(store.load([0], before=version_of(3, 0))) == [2]
    store.save({0: state(3)}, version=version_of(3, 0), keep_from=version_of(2, 1))
    assert store.versions(0) == [version_of(2, 0), version_of(3, 0)]  # 99 is gone
    assert value(store.load([0])) == [3]


def test_pruning_keeps_the_checkpointed_version_and_later_ones(tmp_path):
    store = DeviceStateStore(tmp_path, shard_size=2)
    for rnd in range(1, 6):
        store.save({d: state(rnd) for d in range(3)}, version=version_of(rnd, 0),
                   keep_from=version_of(rnd - 1, 1))
    assert store.versions(0) == [version_of(4, 0), version_of(5, 0)]
    assert store.versions(1) == [version_of(4, 0), version_of(5, 0)]


def test_a_different_shard_size_reads_another_layout(tmp_path):
    # the store is keyed by shard, so readers must use the writer's shard size
    DeviceStateStore(tmp_path, shard_size=4).save({5: state(5)}, version=2)
    assert DeviceStateStore(tmp_path, shard_size=4).load([5])[5] is not None
    assert DeviceStateStore(tmp_path, shard_size=2).load([5])[5] is None


def test_a_failed_write_leaves_the_previous_version_intact(tmp_path, monkeypatch):
    store = DeviceStateStore(tmp_path, shard_size=4)
    store.save({0: state(1)}, version=2)

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pickle, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        store.save({0: state(2)}, version=4)
    monkeypatch.undo()
    assert store.versions(0) == [2] and value(store.load([0])) == [1]
    assert files(tmp_path) == ["shard-000000/" + "v" + "2".zfill(20) + ".pkl"]  # no tmp file
