"""Simulated phones: device profiles, named tiers, seeded tier mixes and a pure cost model.

Everything here is a pure function of its arguments (no clocks, no global RNG): the simulator
asks "how long / how much energy / does it fit / is the device online this round" and gets
the same answer for the same inputs.

Cost model conventions
----------------------
* FLOPs: a dense product of [m, k] x [k, n] costs ``2*m*n*k`` FLOPs (one multiply + one add
  per term). Training costs ``TRAIN_FACTOR = 3`` times the forward pass (backward computes
  gradients w.r.t. activations and weights, each about one forward). Embedding lookups, biases,
  activations and the loss are O(outputs) and ignored.
* Compute time = FLOPs / sustained throughput. Transfer time = bits / link rate, upload then
  download, no latency or protocol overhead. Energy = FLOPs x J/FLOP + bytes x J/byte.
* Memory for training = weights + gradients + optimizer slots (each the size of the model)
  + activations + local data, compared with the share of RAM one app may use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from types import MappingProxyType

import numpy as np

from fedrec.errors import ConfigError

TRAIN_FACTOR: int = 3  # forward + backward ~ 3 x forward (see module docstring)
GiB: int = 2**30


@dataclass(frozen=True)
class DeviceProfile:
    """One class of device. Rates in SI units: FLOP/s, bit/s, joules, bytes.

    Attributes
    ----------
    name : tier name
    flops_per_s : sustained on-device *training* throughput (far below the chip's peak)
    ram_bytes : physical RAM
    app_ram_fraction : share of RAM one app may hold before the OS kills it
    uplink_bps, downlink_bps : typical link rates, bit/s
    availability : probability the device can train in a given round (idle, charging, online)
    battery_budget_j : energy the user lets federated training spend over a run, joules
    energy_per_flop_j : SoC energy per training FLOP (power while training / throughput)
    energy_per_byte_up_j, energy_per_byte_down_j : radio energy per byte sent / received
    max_rounds : participation budget in rounds, None for no limit
    """

    name: str
    flops_per_s: float
    ram_bytes: int
    uplink_bps: float
    downlink_bps: float
    availability: float
    battery_budget_j: float
    energy_per_flop_j: float
    energy_per_byte_up_j: float
    energy_per_byte_down_j: float
    app_ram_fraction: float = 0.5
    max_rounds: int | None = None

    def __post_init__(self) -> None:
        positive = ("flops_per_s", "ram_bytes", "uplink_bps", "downlink_bps")
        for field in positive:
            if not getattr(self, field) > 0:
                raise ConfigError(f"device {self.name!r}: {field} must be > 0, "
                                  f"got {getattr(self, field)}")
        for field in ("availability", "app_ram_fraction"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise ConfigError(f"device {self.name!r}: {field} must be in [0, 1], "
                                  f"got {getattr(self, field)}")
        if self.max_rounds is not None and self.max_rounds < 0:
            raise ConfigError(f"device {self.name!r}: max_rounds must be >= 0 or None")


# --------------------------------------------------------------------------- tier derivations
#: LTE radio power model of Huang et al., "A Close Examination of Performance and Power
#: Characteristics of 4G LTE Networks", MobiSys 2012: P = a_u*t_u + a_d*t_d + beta, with
#: t in Mbit/s and P in mW. Used for every tier (an approximation for 3G / 5G links).
LTE_ALPHA_UP_MW_PER_MBPS: float = 438.39
LTE_ALPHA_DOWN_MW_PER_MBPS: float = 51.97
LTE_BETA_MW: float = 1288.04

#: Upload / download ratio of Ookla's Speedtest Global Index, Q1 2023, global median mobile:
#: 10.42 / 41.54 Mbit/s. Used where a source gives only the download rate.
UP_DOWN_RATIO: float = 10.42 / 41.54

#: Share of a full battery a user is assumed to tolerate for background training over a run
#: (assumption: ~2% is below what users notice; no measured source).
BATTERY_BUDGET_FRACTION: float = 0.02


def lte_energy_per_byte(rate_bps: float, alpha_mw_per_mbps: float) -> float:
    """Radio energy per byte (J) at a steady rate, from the Huang et al. 2012 power model.

    Energy per bit = P / t = (alpha * t + beta) / t  [mW / (Mbit/s) = nJ/bit].
    """
    rate_mbps = rate_bps / 1e6
    return 8.0 * (alpha_mw_per_mbps + LTE_BETA_MW / rate_mbps) * 1e-9


def _phone(
    name: str, *, flops_per_s: float, train_power_w: float, ram_gib: float, down_bps: float,
    availability: float, battery_wh: float,
) -> DeviceProfile:
    """Build a tier from the primary numbers; derived fields follow the module conventions."""
    up_bps = down_bps * UP_DOWN_RATIO
    return DeviceProfile(
        name=name,
        flops_per_s=flops_per_s,
        ram_bytes=int(ram_gib * GiB),
        uplink_bps=up_bps,
        downlink_bps=down_bps,
        availability=availability,
        battery_budget_j=battery_wh * 3600.0 * BATTERY_BUDGET_FRACTION,
        energy_per_flop_j=train_power_w / flops_per_s,
        energy_per_byte_up_j=lte_energy_per_byte(up_bps, LTE_ALPHA_UP_MW_PER_MBPS),
        energy_per_byte_down_j=lte_energy_per_byte(down_bps, LTE_ALPHA_DOWN_MW_PER_MBPS),
    )


# Peak FP32 CPU throughput = sum over cores of GHz x FP32 FLOP/cycle, with FLOP/cycle = SIMD
# lanes x 2 (FMA) x FMA pipes as we read the public microarchitecture descriptions (assumed,
# not measured): Cortex-A53 4, Kryo 280 gold (A73-derived) 8, Apple Monsoon 24, Mistral 8,
# Cortex-X3 32, A715/A710 16, A510 8. GPUs/NPUs are ignored: the papers train on the CPU.
#
# Sustained *training* throughput is assumed to be 10% of CPU peak for native frameworks
# (MNN, TFLite): recommendation models are small GEMMs and memory-bound embedding gathers at
# batch sizes of tens, phones throttle after minutes of full load, and apps leave cores to the
# UI. C3DRec trains with TensorFlow.js inside an Android WebView (pure-JS CPU backend, one
# thread, no SIMD), which we model as ~1 FLOP/cycle on one 2.45 GHz big core.
#
# Network: OpenSignal "The State of LTE" (Feb 2018, Q4 2017 data): global average 4G download
# 16.9 Mbit/s, the networks the 2017 phones saw; the same publisher's 2017 report gives 4.4
# Mbit/s for 3G. Ookla Speedtest Global Index Q1 2023: global median mobile 41.54 / 10.42.
# Uplinks use UP_DOWN_RATIO. Wi-Fi is typically faster: pass your own with dataclasses.replace.
#
# Availability per round: assumptions. Production FL (Bonawitz et al., "Towards Federated
# Learning at Scale", SysML 2019) trains only on idle, charging, unmetered devices, so a
# minority of devices is eligible at any time; newer phones are assumed to qualify more often.
#
# Training power: assumed SoC power while training, inside the ~2-4 W a phone sustains
# without throttling; energy_per_flop_j = power / sustained throughput.
_TIERS: dict[str, DeviceProfile] = {
    # Google Pixel 2 as used by C3DRec (sec. 4.2): Snapdragon 835, 4x2.45 GHz + 4x1.9 GHz Kryo,
    # 4 GB RAM. Peak 4*2.45*8 + 4*1.9*4 = 108.8 GFLOP/s; TF.js in WebView: 2.45 GFLOP/s (2.3%).
    # C3DRec measured 480-843 MB RAM and 1117-1163 s per on-device training (Tables 3-4).
    # Battery 2700 mAh x 3.85 V = 10.4 Wh.
    "pixel2": _phone("pixel2", flops_per_s=2.45e9, train_power_w=2.0, ram_gib=4,
                     down_bps=16.9e6, availability=0.3, battery_wh=10.4),
    # Apple iPhone 8 Plus as used by CoDA (sec. 5.4): A11, 2x2.53 GHz + 4x1.42 GHz, 3 GB RAM.
    # Peak 2*2.53*24 + 4*1.42*8 = 166.9 GFLOP/s; MNN native: 10% = 16.7 GFLOP/s.
    # CoDA measured 0.7 s per round of on-device tasks, 120 MB extra RAM, 19.4 KB download.
    # Battery 2691 mAh x 3.82 V = 10.28 Wh.
    "iphone8plus": _phone("iphone8plus", flops_per_s=16.69e9, train_power_w=3.0, ram_gib=3,
                          down_bps=16.9e6, availability=0.3, battery_wh=10.28),
    # 2023 flagship, Samsung Galaxy S23 (Snapdragon 8 Gen 2): 1x3.36 GHz X3, 2x2.8 A715,
    # 2x2.8 A710, 3x2.0 A510, 8 GB RAM. Peak 107.5 + 179.2 + 48 = 334.7 GFLOP/s; 10% = 33.5.
    # Battery 3900 mAh x 3.88 V = 15.1 Wh.
    "highend": _phone("highend", flops_per_s=33.47e9, train_power_w=3.0, ram_gib=8,
                      down_bps=41.54e6, availability=0.5, battery_wh=15.1),
    # Budget phone (Snapdragon 450 class): 8x Cortex-A53 at 1.8 GHz, 2 GB RAM, 3G-class link.
    # Peak 8*1.8*4 = 57.6 GFLOP/s; 10% = 5.76. Battery 3000 mAh x 3.85 V = 11.55 Wh.
    "lowend": _phone("lowend", flops_per_s=5.76e9, train_power_w=2.0, ram_gib=2,
                     down_bps=4.4e6, availability=0.2, battery_wh=11.55),
}
#: Named tiers, read-only.
TIERS: Mapping[str, DeviceProfile] = MappingProxyType(_TIERS)


# --------------------------------------------------------------------------- tier mixes
def parse_tier_mix(text: str, tiers: Mapping[str, DeviceProfile] = TIERS) -> dict[str, float]:
    """Parse ``"pixel2:0.5,iphone8plus:0.3,highend:0.2"`` into normalised weights.

    A bare name means weight 1 (``"highend"`` = all high-end). Weights need not sum to 1; they
    are divided by their sum. Order is kept (it fixes tier indices in ``assign_tiers``).
    """
    mix: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise ConfigError(f"empty entry in tier mix {text!r}; write name:weight,name:weight")
        name, _, weight_s = part.partition(":")
        name = name.strip()
        if name not in tiers:
            raise ConfigError(f"unknown device tier {name!r} in {text!r}; "
                              f"valid tiers: {', '.join(sorted(tiers))}")
        if name in mix:
            raise ConfigError(f"device tier {name!r} given twice in {text!r}; list it once")
        try:
            weight = float(weight_s) if weight_s.strip() else 1.0
        except ValueError:
            raise ConfigError(f"weight {weight_s!r} of tier {name!r} is not a number; "
                              "write name:0.5") from None
        if not (math.isfinite(weight) and weight > 0):
            raise ConfigError(f"weight of tier {name!r} must be a positive number, got {weight_s}; "
                              f"write e.g. {name}:1 (valid tiers: {', '.join(sorted(tiers))})")
        mix[name] = weight
    total = sum(mix.values())
    return {name: w / total for name, w in mix.items()}


_M64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic): a stateless hash."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_uniform(seed: int, stream: int, round_: int, ids: np.ndarray | int) -> np.ndarray:
    """Uniform [0, 1) floats that depend only on (seed, stream, round_, id), one per id."""
    h = _splitmix64(np.array([seed & _M64], dtype=np.uint64))
    h = _splitmix64(h ^ np.uint64(stream & _M64))
    h = _splitmix64(h ^ np.uint64(round_ & _M64))
    ids64 = np.atleast_1d(np.asarray(ids)).astype(np.int64).astype(np.uint64)
    return (_splitmix64(h ^ ids64) >> np.uint64(11)).astype(np.float64) * 2.0**-53


_STREAM_TIER, _STREAM_AVAILABLE = 1, 2
_STREAM_FAULT = {"unavailable": 3, "crash": 4}


def assign_tiers(n_devices: int, mix: Mapping[str, float], seed: int) -> np.ndarray:
    """Tier index of each device, into ``list(mix)``. -> int64 [n_devices].

    Device d's tier depends only on (seed, d, mix): adding devices never changes the tiers of
    existing ones. Each device draws independently, so shares match ``mix`` in expectation.
    """
    weights = np.array(list(mix.values()), dtype=np.float64)
    if weights.size == 0 or not np.all(weights > 0):
        raise ConfigError("tier mix must name at least one tier with a positive weight")
    edges = np.cumsum(weights / weights.sum())[:-1]  # [T-1] upper edges of all but the last
    u = hash_uniform(seed, _STREAM_TIER, 0, np.arange(n_devices))
    return np.searchsorted(edges, u, side="right").astype(np.int64)


def assign_profiles(
    n_devices: int, mix: Mapping[str, float], seed: int,
    tiers: Mapping[str, DeviceProfile] = TIERS,
) -> list[DeviceProfile]:
    """``assign_tiers`` resolved to profiles: element d is device d's profile."""
    names = list(mix)
    return [tiers[names[i]] for i in assign_tiers(n_devices, mix, seed)]


def available_mask(
    availability: np.ndarray | float, seed: int, round_: int, device_ids: np.ndarray
) -> np.ndarray:
    """Which devices can train in ``round_``: deterministic in (seed, round_, device id).

    availability: float [D] (or scalar) per-device probabilities; device_ids: int [D].
    """
    u = hash_uniform(seed, _STREAM_AVAILABLE, round_, device_ids)
    return u < np.asarray(availability, dtype=np.float64)


def is_available(profile: DeviceProfile, seed: int, round_: int, device_id: int) -> bool:
    """Whether device ``device_id`` (of this profile) can train in ``round_``."""
    return bool(available_mask(profile.availability, seed, round_, np.array([device_id]))[0])


def injected_fault(kind: str, rate: float, seed: int, round_: int, device_id: int) -> bool:
    """Whether an injected fault of ``kind`` ("unavailable": the device cannot take part;
    "crash": it dies after training, before its upload) hits ``device_id`` in ``round_``:
    deterministic in (seed, round, device), independent of the profile's availability."""
    if rate <= 0:
        return False
    return bool(hash_uniform(seed, _STREAM_FAULT[kind], round_, device_id) < rate)


# --------------------------------------------------------------------------- cost functions
def compute_time_s(flops: float, profile: DeviceProfile) -> float:
    """Seconds to execute ``flops`` at the device's sustained throughput."""
    return flops / profile.flops_per_s


def transfer_time_s(bytes_up: float, bytes_down: float, profile: DeviceProfile) -> float:
    """Seconds to upload then download the given bytes (no latency, no protocol overhead)."""
    return 8.0 * bytes_up / profile.uplink_bps + 8.0 * bytes_down / profile.downlink_bps


def round_time_s(flops: float, bytes_up: float, bytes_down: float, p: DeviceProfile) -> float:
    """Wall time of one round on a device: download + train + upload, done in sequence."""
    return compute_time_s(flops, p) + transfer_time_s(bytes_up, bytes_down, p)


def training_memory_bytes(
    model_bytes: float, activation_bytes: float, data_bytes: float, optimizer_slots: int = 0
) -> float:
    """Peak training memory: weights + gradients + optimizer slots + activations + data.

    optimizer_slots: model-sized buffers of the optimizer (SGD 0, Adagrad 1, Adam 2).
    """
    return model_bytes * (2 + optimizer_slots) + activation_bytes + data_bytes


def memory_feasible(
    model_bytes: float, activation_bytes: float, data_bytes: float, profile: DeviceProfile,
    optimizer_slots: int = 0,
) -> bool:
    """Whether ``training_memory_bytes`` fits in the RAM one app may use on this device."""
    need = training_memory_bytes(model_bytes, activation_bytes, data_bytes, optimizer_slots)
    return need <= profile.ram_bytes * profile.app_ram_fraction


def energy_j(flops: float, bytes_up: float, bytes_down: float, profile: DeviceProfile) -> float:
    """Joules to compute ``flops`` and move the bytes (radio tail energy ignored)."""
    return (flops * profile.energy_per_flop_j + bytes_up * profile.energy_per_byte_up_j
            + bytes_down * profile.energy_per_byte_down_j)


def rounds_affordable(energy_per_round_j: float, profile: DeviceProfile) -> int:
    """Rounds the device can join before its battery budget (or ``max_rounds``) runs out."""
    if not energy_per_round_j > 0:
        raise ConfigError(f"energy per round must be > 0 J, got {energy_per_round_j}; "
                          "compute it with energy_j")
    by_energy = math.floor(profile.battery_budget_j / energy_per_round_j)
    return by_energy if profile.max_rounds is None else min(by_energy, profile.max_rounds)


# --------------------------------------------------------------------------- FLOP counting
def matmul_flops(m: int, n: int, k: int) -> int:
    """FLOPs of a dense [m, k] x [k, n] product: 2*m*n*k (multiply + add)."""
    return 2 * m * n * k


def mf_train_flops(n_examples: int, dim: int, items_per_example: int = 2) -> int:
    """Training FLOPs of matrix factorisation: dot products of dim-d embeddings.

    items_per_example: items scored per example (BPR: positive + negative = 2; BCE: 1).
    Forward = n * items * 2d; training = TRAIN_FACTOR x forward.
    """
    return TRAIN_FACTOR * n_examples * items_per_example * 2 * dim


def mlp_flops(layer_sizes: Sequence[int], n: int, train: bool = True) -> int:
    """FLOPs of an MLP with widths ``layer_sizes`` (input first) on n examples.

    Forward = sum of 2*n*a*b over consecutive (a, b); x TRAIN_FACTOR when ``train``.
    """
    fwd = sum(matmul_flops(n, b, a) for a, b in pairwise(layer_sizes))
    return fwd * (TRAIN_FACTOR if train else 1)


def gru_flops(seq_len: int, hidden: int, input_dim: int, n: int, train: bool = True) -> int:
    """FLOPs of a one-layer GRU over n sequences of ``seq_len`` steps.

    Per step: 3 gates, each an input product [input_dim -> hidden] and a recurrent product
    [hidden -> hidden]: 3 * 2 * hidden * (input_dim + hidden). x TRAIN_FACTOR when ``train``.
    """
    fwd = n * seq_len * 3 * 2 * hidden * (input_dim + hidden)
    return fwd * (TRAIN_FACTOR if train else 1)


def param_bytes(n_params: int, bytes_per_param: int = 4) -> int:
    """Bytes of ``n_params`` parameters (float32 by default) on the wire or in RAM."""
    return n_params * bytes_per_param
