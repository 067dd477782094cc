"""clients.state.DeviceStateStore: one pickle per shard of consecutive device ids, atomic writes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from clients.state import DeviceStateStore


def state(v: float) -> dict[str, np.ndarray]:
    return {"user": np.full(2, v, np.float32)}


def files(root) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_shard_of_groups_consecutive_ids():
    store = DeviceStateStore("/nowhere", shard_size=4)
    assert [store.shard_of(d) for d in range(10)] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]


def test_unknown_devices_load_as_none_without_creating_files(tmp_path):
    store = DeviceStateStore(tmp_path / "s", shard_size=4)
    assert store.load([0, 5, 9]) == {0: None, 5: None, 9: None}
    assert not (tmp_path / "s").exists()


def test_save_writes_one_file_per_shard_and_load_returns_the_states(tmp_path):
    store = DeviceStateStore(tmp_path, shard_size=4)
    store.save({0: state(0), 3: state(3), 4: state(4), 9: state(9)})
    assert files(tmp_path) == ["shard-000000.pkl", "shard-000001.pkl", "shard-000002.pkl"]
    with (tmp_path / "shard-000000.pkl").open("rb") as fh:
        assert sorted(pickle.load(fh)) == [0, 3]
    got = store.load([9, 3, 1])
    assert list(got) == [9, 3, 1] and got[1] is None
    np.testing.assert_array_equal(got[9]["user"], [9, 9])
    np.testing.assert_array_equal(got[3]["user"], [3, 3])


def test_save_keeps_the_other_devices_of_a_shard(tmp_path):
    store = DeviceStateStore(tmp_path, shard_size=4)
    store.save({0: state(0), 1: state(1)})
    store.save({1: state(10), 2: state(2)})
    got = store.load([0, 1, 2, 3])
    assert [None if s is None else float(s["user"][0]) for s in got.values()] == [0, 10, 2, None]


def test_a_different_shard_size_reads_another_layout(tmp_path):
    # the store is keyed by shard, so readers must use the writer's shard size
    DeviceStateStore(tmp_path, shard_size=4).save({5: state(5)})
    assert DeviceStateStore(tmp_path, shard_size=4).load([5])[5] is not None
    assert DeviceStateStore(tmp_path, shard_size=2).load([5])[5] is None


def test_a_failed_write_leaves_the_previous_shard_file_intact(tmp_path, monkeypatch):
    store = DeviceStateStore(tmp_path, shard_size=4)
    store.save({0: state(1)})
    before = (tmp_path / "shard-000000.pkl").read_bytes()

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pickle, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        store.save({0: state(2)})
    monkeypatch.undo()
    assert (tmp_path / "shard-000000.pkl").read_bytes() == before
    assert float(store.load([0])[0]["user"][0]) == 1.0


def test_successful_writes_leave_no_temporary_files(tmp_path):
    store = DeviceStateStore(tmp_path, shard_size=2)
    for rnd in range(3):
        store.save({d: state(rnd) for d in range(5)})
    assert files(tmp_path) == ["shard-000000.pkl", "shard-000001.pkl", "shard-000002.pkl"]
