"""Local differential privacy for device uploads: clipping, Laplace / Gaussian noise,
fake-row padding, per-device privacy budgets (privacy heterogeneity), and the report of what
a device spent.

Pure functions, arrays in and arrays out; the only randomness is the ``np.random.Generator``
passed in. Both halves use this module: the device-side LDP wrapper (issue 5,
clients.ldp_device) calls ``privatize_upload`` on a device's upload and sends the returned
``NoiseReport`` as reply metrics (``report_metrics``); the cloud reads it back
(``report_from_metrics``) for its accountant (strategies.privacy, strategies.accountant).
The cloud's robust rules (strategies.robust, strategies.defences) reuse the clipping.
Mechanism as in the tutorial's "model obfuscation" (Yin, Qu et al., On-Device Recommender
Systems survey, ch. 5, after Wu et al. 2022): g = clip(g, C) + noise.

Which arrays are perturbed: every floating array of an upload (dense deltas and the ``.val``
of ``SparseRows``); integer arrays (the ``.idx`` row indices) travel unchanged.

Sensitivity: LDP protects a device's whole upload, so the sensitivity is the diameter of the
set of possible clipped uploads (replacement neighbours, the conservative choice): an L2 ball
of radius C has L2 diameter 2C and L1 diameter 2C sqrt(n) over n coordinates.

Privacy of sparse uploads: noise is added only to the rows a device uploads. The guarantee
covers the values given the index set; the index set itself (the items the device trained
on: its positives and sampled negatives) is released in the clear, the leak pointed out by
FedGNN (Wu et al. 2021) and FedMF (Chai et al. 2020). ``pad_with_fake_rows`` hides the real
rows among random untouched items (FedRec, Lin et al. 2020): plausible deniability, not DP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr, ndtr

from fedrec.errors import ConfigError
from fedrec.payload import SparseRows
from fedrec.protocol import Arrays

MECHANISMS = ("laplace", "gaussian")
CLIPS = ("upload", "row", "coord")
_EPS_STREAM = 0x4C4450  # "LDP": keeps the epsilon draw apart from every other seeded stream


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}; pass a positive number")


def _is_values(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.floating)


# ---------------------------------------------------------------- clipping


def clip_l2(x: np.ndarray, bound: float) -> np.ndarray:
    """Scale the whole array so that its L2 norm is at most ``bound`` (same dtype)."""
    _positive("clip bound", bound)
    norm = float(np.linalg.norm(x))
    return x * np.asarray(bound / norm, x.dtype) if norm > bound else x.copy()


def clip_rows_l2(values: np.ndarray, bound: float) -> np.ndarray:
    """Clip each row of ``values`` [K, D] to L2 norm at most ``bound`` (same dtype)."""
    _positive("clip bound", bound)
    norms = np.linalg.norm(values.astype(np.float64), axis=1, keepdims=True)  # [K, 1]
    scale = np.minimum(1.0, bound / np.maximum(norms, np.finfo(np.float64).tiny))
    return (values * scale).astype(values.dtype)


def clip_coords(x: np.ndarray, bound: float) -> np.ndarray:
    """Clip every coordinate into [-bound, bound] (same dtype)."""
    _positive("clip bound", bound)
    return np.clip(x, -bound, bound)


def upload_norm(upload: Arrays) -> float:
    """Joint L2 norm of all floating arrays of an upload, in float64."""
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64)))
                         for a in upload.values() if _is_values(a)))


def clip_upload(upload: Arrays, clip: str, bound: float) -> tuple[Arrays, int]:
    """Clip an upload; returns (clipped upload, number of clipping units).

    clip: "upload" = joint L2 over every floating array (1 unit); "row" = L2 per row of each
    2-D floating array and per whole 1-D/scalar array (units = rows + such arrays);
    "coord" = each coordinate into [-bound, bound] (units = coordinates).
    """
    _positive("clip bound", bound)
    if clip not in CLIPS:
        raise ConfigError(f"unknown clipping {clip!r}; use one of {', '.join(CLIPS)}")
    values = {k: a for k, a in upload.items() if _is_values(a)}
    if clip == "upload":
        norm = upload_norm(values)
        factor = min(1.0, bound / norm) if norm > 0 else 1.0
        out = {k: (a * np.asarray(factor, a.dtype)) for k, a in values.items()}
        return {**upload, **out}, 1
    if clip == "coord":
        return {**upload, **{k: clip_coords(a, bound) for k, a in values.items()}}, \
            sum(a.size for a in values.values())
    out = {k: clip_rows_l2(a, bound) if a.ndim == 2 else clip_l2(a, bound)
           for k, a in values.items()}
    return {**upload, **out}, sum(len(a) if a.ndim == 2 else 1 for a in values.values())


def upload_sensitivity(clip: str, bound: float, n_units: int, n_coords: int, norm: str) -> float:
    """Diameter of the clipped upload set in the L1 or L2 norm (replacement neighbours).

    upload: L2 ball radius C -> l2 = 2C, l1 = 2C sqrt(n). row: u units each in an L2 ball
    of radius C -> l2 = 2C sqrt(u), l1 = 2C sqrt(n u) (worst case by Cauchy-Schwarz).
    coord: box [-c, c]^n -> l2 = 2c sqrt(n), l1 = 2c n.
    """
    if norm not in ("l1", "l2"):
        raise ConfigError(f"unknown sensitivity norm {norm!r}; use l1 or l2")
    l2 = {"upload": 1.0, "row": math.sqrt(n_units), "coord": math.sqrt(n_coords)}[clip]
    l1 = {"upload": math.sqrt(n_coords), "row": math.sqrt(n_coords * n_units),
          "coord": float(n_coords)}[clip]
    return 2.0 * bound * (l1 if norm == "l1" else l2)


# ---------------------------------------------------------------- noise scales


def laplace_scale(sensitivity: float, epsilon: float) -> float:
    """Laplace mechanism scale b = sensitivity / epsilon (L1 sensitivity); 0 when eps = inf."""
    _positive("epsilon", epsilon)
    return 0.0 if math.isinf(epsilon) else sensitivity / epsilon


def gaussian_sigma_classic(sensitivity: float, epsilon: float, delta: float) -> float:
    """sigma = sqrt(2 ln(1.25/delta)) * sensitivity / epsilon (Dwork & Roth 2014, Thm A.1).

    Valid only for epsilon < 1; ``gaussian_sigma_analytic`` is tighter and valid for any eps.
    """
    _positive("epsilon", epsilon)
    if not (epsilon < 1 and 0 < delta < 1):
        raise ConfigError(f"classic Gaussian bound needs epsilon < 1 and 0 < delta < 1 "
                          f"(got {epsilon}, {delta}); use the analytic Gaussian mechanism")
    return math.sqrt(2 * math.log(1.25 / delta)) * sensitivity / epsilon


def gaussian_delta(sigma: float, sensitivity: float, epsilon: float) -> float:
    """Exact delta of the Gaussian mechanism at epsilon (Balle & Wang 2018, Thm 8).

    delta = Phi(D/(2s) - eps s/D) - e^eps Phi(-D/(2s) - eps s/D), the second term in log space.
    """
    a, b = sensitivity / (2 * sigma), epsilon * sigma / sensitivity
    return float(ndtr(a - b) - np.exp(epsilon + log_ndtr(-a - b)))


def gaussian_sigma_analytic(sensitivity: float, epsilon: float, delta: float) -> float:
    """Smallest sigma with gaussian_delta(sigma) <= delta: analytic Gaussian mechanism.

    Balle & Wang, "Improving the Gaussian Mechanism for Differential Privacy: Analytical
    Calibration and Optimal Denoising", ICML 2018. gaussian_delta decreases in sigma, so the
    root is bracketed by doubling/halving and found with Brent's method.
    """
    _positive("epsilon", epsilon)
    _positive("sensitivity", sensitivity)
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta}; e.g. delta=1e-5")
    if math.isinf(epsilon):
        return 0.0

    def gap(sigma: float) -> float:
        return gaussian_delta(sigma, sensitivity, epsilon) - delta

    lo = hi = sensitivity
    while gap(hi) > 0:
        hi *= 2.0
    while gap(lo) <= 0:
        lo /= 2.0
    from scipy.optimize import brentq  # here: a 0.3 s import every ClientApp process paid

    sigma = brentq(gap, lo, hi, xtol=1e-14 * hi, rtol=1e-14)
    return sigma * (1 + 1e-12) if gap(sigma) > 0 else sigma  # stay on the private side


def gaussian_sigma(sensitivity: float, epsilon: float, delta: float,
                   method: str = "analytic") -> float:
    """sigma of the Gaussian mechanism; method "analytic" (default) or "classic"."""
    if method == "classic":
        return 0.0 if math.isinf(epsilon) else gaussian_sigma_classic(sensitivity, epsilon, delta)
    if method == "analytic":
        return gaussian_sigma_analytic(sensitivity, epsilon, delta)
    raise ConfigError(f"unknown Gaussian calibration {method!r}; use analytic or classic")


# ---------------------------------------------------------------- noise


def add_noise(x: np.ndarray, mechanism: str, scale: float,
              rng: np.random.Generator) -> np.ndarray:
    """x + noise; Laplace(0, scale) or N(0, scale^2) per coordinate, drawn in float64."""
    if mechanism not in MECHANISMS:
        raise ConfigError(f"unknown mechanism {mechanism!r}; use laplace or gaussian")
    if scale == 0:
        return x.copy()
    draw = rng.laplace if mechanism == "laplace" else rng.normal
    return (x.astype(np.float64) + draw(0.0, scale, size=x.shape)).astype(x.dtype)


def perturb_rows(rows: SparseRows, mechanism: str, scale: float,
                 rng: np.random.Generator) -> SparseRows:
    """Noise on the uploaded rows only (values [K, D]); the indices [K] are unchanged."""
    return SparseRows(rows.indices, add_noise(rows.values, mechanism, scale, rng))


def perturb_upload(upload: Arrays, mechanism: str, scale: float,
                   rng: np.random.Generator) -> Arrays:
    """Noise on every floating array, drawn in sorted-name order (deterministic)."""
    noisy = {k: add_noise(upload[k], mechanism, scale, rng)
             for k in sorted(upload) if _is_values(upload[k])}
    return {k: noisy.get(k, a) for k, a in upload.items()}


def pad_with_fake_rows(rows: SparseRows, n_items: int, n_fake: int,
                       rng: np.random.Generator) -> SparseRows:
    """Add ``n_fake`` zero-valued rows at random untouched items; result sorted by index.

    Pad BEFORE adding noise: noised zeros then look like real rows to the cloud. Under the
    FedMF row mean a fake row counts as a sender, shrinking that item's mean delta.
    """
    if len(rows.indices) and not 0 <= rows.indices.min() <= rows.indices.max() < n_items:
        raise ValueError(f"row indices must lie in [0, {n_items})")
    free = np.setdiff1d(np.arange(n_items, dtype=np.int64), rows.indices)  # [n_items - K]
    if not 0 <= n_fake <= len(free):
        raise ConfigError(f"cannot pad {n_fake} fake rows: only {len(free)} untouched items; "
                          "lower the number of fake rows")
    fake = rng.choice(free, size=n_fake, replace=False)
    idx = np.concatenate([rows.indices.astype(np.int64), fake])  # [K + n_fake]
    vals = np.concatenate([rows.values, np.zeros((n_fake, rows.values.shape[1]),
                                                 rows.values.dtype)])
    order = np.argsort(idx, kind="stable")
    return SparseRows(idx[order], vals[order])


# ---------------------------------------------------------------- one device's upload


@dataclass(frozen=True)
class LdpSpec:
    """How one device privatises its upload.

    mechanism: "laplace" (pure eps, L1 sensitivity) or "gaussian" ((eps, delta), L2).
    clip / bound: clipping kind ("upload", "row", "coord") and its bound C.
    epsilon: the device's budget per round (``inf`` = clip only, no noise).
    gaussian_method: "analytic" (Balle & Wang 2018, default) or "classic" (eps < 1 only).
    """

    mechanism: str = "laplace"
    clip: str = "upload"
    bound: float = 1.0
    epsilon: float = 1.0
    delta: float = 1e-5
    gaussian_method: str = "analytic"

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ConfigError(f"unknown LDP mechanism {self.mechanism!r}; use laplace or gaussian")
        if self.clip not in CLIPS:
            raise ConfigError(f"unknown LDP clipping {self.clip!r}; use {', '.join(CLIPS)}")
        _positive("LDP clip bound", self.bound)
        _positive("LDP epsilon", self.epsilon)
        if self.mechanism == "gaussian" and not 0 < self.delta < 1:
            raise ConfigError(f"LDP delta must be in (0, 1), got {self.delta}; e.g. 1e-5")


@dataclass(frozen=True)
class NoiseReport:
    """What a device applied in one round; the accountant's input (JSON-able fields).

    sensitivity: in the mechanism's norm (L1 for Laplace, L2 for Gaussian); scale: Laplace b
    or Gaussian sigma; delta is 0 for Laplace.
    """

    mechanism: str
    epsilon: float
    delta: float
    sensitivity: float
    scale: float

    @property
    def noise_multiplier(self) -> float:
        """sigma / L2 sensitivity (Gaussian; inf when there is nothing to protect)."""
        return self.scale / self.sensitivity if self.sensitivity > 0 else math.inf


#: reply-metric keys of a NoiseReport (``ldp_gaussian``: 1.0 for Gaussian, 0.0 for Laplace)
REPORT_KEYS = ("ldp_epsilon", "ldp_delta", "ldp_scale", "ldp_sensitivity", "ldp_gaussian")


def report_metrics(rep: NoiseReport) -> dict[str, float]:
    """A NoiseReport as reply metrics (floats; the keys of ``REPORT_KEYS``)."""
    return {"ldp_epsilon": rep.epsilon, "ldp_delta": rep.delta, "ldp_scale": rep.scale,
            "ldp_sensitivity": rep.sensitivity, "ldp_gaussian": float(rep.mechanism == "gaussian")}


def report_from_metrics(metrics: dict[str, float]) -> NoiseReport | None:
    """The NoiseReport a reply's metrics carry (``report_metrics``), None when it has none."""
    if "ldp_epsilon" not in metrics:
        return None
    gaussian = metrics.get("ldp_gaussian", 0.0) == 1.0
    return NoiseReport("gaussian" if gaussian else "laplace", float(metrics["ldp_epsilon"]),
                       float(metrics.get("ldp_delta", 0.0)),
                       float(metrics.get("ldp_sensitivity", 0.0)),
                       float(metrics.get("ldp_scale", 0.0)))


def privatize_upload(upload: Arrays, spec: LdpSpec,
                     rng: np.random.Generator) -> tuple[Arrays, NoiseReport]:
    """clip(upload) + noise calibrated to the clipped set's diameter. Indices pass unchanged."""
    clipped, n_units = clip_upload(upload, spec.clip, spec.bound)
    n_coords = sum(a.size for a in upload.values() if _is_values(a))
    norm = "l1" if spec.mechanism == "laplace" else "l2"
    sens = upload_sensitivity(spec.clip, spec.bound, n_units, n_coords, norm)
    if spec.mechanism == "laplace":
        scale, delta = laplace_scale(sens, spec.epsilon), 0.0
    else:
        scale = gaussian_sigma(sens, spec.epsilon, spec.delta, spec.gaussian_method)
        delta = spec.delta
    report = NoiseReport(spec.mechanism, spec.epsilon, delta, sens, scale)
    return perturb_upload(clipped, spec.mechanism, scale, rng), report


# ---------------------------------------------------------------- privacy heterogeneity

EpsilonMix = tuple[tuple[float, float], ...]


def parse_epsilon_mix(text: str) -> EpsilonMix:
    """"1:0.3,4:0.5,inf:0.2" -> ((1.0, 0.3), (4.0, 0.5), (inf, 0.2)): (epsilon, share).

    Shares must be >= 0 and sum to 1; epsilons > 0, "inf" = this group adds no noise.
    """
    hint = 'write it as "eps:share,..." e.g. "1:0.3,4:0.5,inf:0.2"'
    try:
        pairs = [tuple(float(v) for v in part.split(":")) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"epsilon mix {text!r} is not a list of eps:share pairs; {hint}") \
            from None
    if not pairs or any(len(p) != 2 or not p[0] > 0 or not p[1] >= 0 for p in pairs):
        raise ConfigError(f"epsilon mix {text!r} needs eps > 0 and share >= 0; {hint}")
    if abs(sum(p[1] for p in pairs) - 1.0) > 1e-9:
        raise ConfigError(f"epsilon mix {text!r}: shares sum to {sum(p[1] for p in pairs)}, "
                          f"not 1; {hint}")
    return tuple((p[0], p[1]) for p in pairs)


def device_epsilon(mix: EpsilonMix, seed: int, device_id: int) -> float:
    """The epsilon of one device: a function of (seed, device_id) only.

    u = a uniform in [0, 1) hashed from (seed, device_id) by numpy's SeedSequence; the device
    takes the first group whose cumulative share exceeds u.
    """
    word = np.random.SeedSequence([seed, device_id, _EPS_STREAM]).generate_state(2, np.uint32)
    u = (int(word[0]) * 2**32 + int(word[1])) / 2**64  # 64 random bits -> [0, 1)
    cum = np.cumsum([share for _, share in mix])
    group = min(int(np.searchsorted(cum, u, side="right")), len(mix) - 1)
    return mix[group][0]


def assign_epsilons(mix: EpsilonMix, seed: int, device_ids: np.ndarray) -> np.ndarray:
    """device_epsilon for each id: float64 [n] (inf for the no-noise group)."""
    return np.array([device_epsilon(mix, seed, int(d)) for d in device_ids], dtype=np.float64)
