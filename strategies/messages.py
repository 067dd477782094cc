"""What travels between the cloud and the Flower clients that host devices, in both directions.

Down: one packed message per client (``fedrec.payload``): the phase's broadcast arrays once,
each device's own arrays under its scope, and a JSON header naming the phase, the round, the
devices, their shard size, the run's id (the client decides where its devices' private
state lives; the cloud only says which run), and the reduce spec where cohorts may sum.
Up: the devices' uploads (or a cohort's sums) and a JSON report per device.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from fedrec.payload import BROADCAST, REDUCED, pack, scoped, split_scopes, unpack
from fedrec.protocol import Arrays, DeviceReply

NDArrays = list[np.ndarray]


def route(device_ids: list[int], shard_size: int, n_clients: int,
          n_devices: int | None = None) -> dict[int, list[int]]:
    """Client slot -> its devices. A shard (``d // shard_size``) never spans two slots.

    With ``n_devices`` (the population), slot i gets a contiguous block of shards (the i-th
    of ``n_clients`` equal blocks): with slots in node partition order, SuperNode i hosts
    devices in one id range, the same every round. Without it, shards go round-robin.
    """
    n_shards = -(-n_devices // shard_size) if n_devices else 0
    slots: dict[int, list[int]] = defaultdict(list)
    for d in device_ids:
        shard = d // shard_size
        slot = shard * n_clients // n_shards if n_shards > shard else shard % n_clients
        slots[slot].append(d)
    return dict(slots)


def build_messages(header: dict[str, Any], ids: list[int], broadcast: Arrays,
                   own: dict[int, Arrays], shard: int, slots: list[str],
                   n_devices: int | None = None
                   ) -> tuple[list[tuple[str, NDArrays]], dict[str, list[int]]]:
    """(client id, packed message) per client with devices, and client id -> its devices."""
    messages, sent = [], {}
    for slot, devs in sorted(route(ids, shard, len(slots), n_devices).items()):
        arrays = scoped(BROADCAST, broadcast)
        for d in devs:
            arrays.update(scoped(d, own.get(d, {})))
        cid = slots[slot]
        sent[cid] = devs
        messages.append((cid, pack(arrays, {**header, "devices": devs})))
    return messages, sent


def read_reply(nd: NDArrays) -> tuple[list[DeviceReply], tuple[int, Arrays] | None]:
    """A client's per-device replies and, where it summed its cohort, (first device, sums)."""
    arrays, meta = unpack(nd)
    scopes = split_scopes(arrays)
    part = None
    if REDUCED in scopes:
        part = (min(int(d) for d in meta["devices"]), scopes.pop(REDUCED))
    return decode_replies(scopes, meta["devices"]), part


def decode_replies(scopes: dict[str, Arrays], info: dict[str, Any]) -> list[DeviceReply]:
    """Per-device replies from a client's upload scopes + its JSON report."""
    out = []
    for key, rec in info.items():
        out.append(DeviceReply(
            device_id=int(key), upload=scopes.get(key, {}), metrics=rec.get("metrics", {}),
            num_examples=int(rec.get("n", 0)), status=rec.get("status", "ok"),
            error=rec.get("error", ""), costs=rec.get("costs", {}),
        ))
    return out
