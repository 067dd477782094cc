"""CoDA: cloud KNN sample matching, on-device sample filtering, validation-gated
personalisation (Gu et al., Mobile Taobao; docs/coda.md).

One round is one simulated day d = ``coda-first-day + round - 1``:

1. ``match`` (cloud only, overnight; the CoDA arm): from the samples the devices logged up
   to day d-1 (the pool; logs are reported at the end of each day), each user's vector is
   its category-visit histogram over the last ``coda-feature-days`` days (Algorithm 1's
   mean feature vector); faiss finds its K nearest other users; their samples of the last
   ``coda-match-days`` days, shuffled, cut into batches of 25 (<= 40), at most 12, are the
   device's matched set. Samples are stored once and referenced by id (de-duplication);
2. ``fit`` (devices, day d): pull the batches (sparse binary + zlib + BASE64, no user ids),
   filter, train, serve and score day d's samples (clients.coda_device). Nothing is uploaded.

Before round 1 the cloud trains the global CTR model (DIN) on every sample logged before
day ``coda-first-day``; it is every device's M0 and the Cloud arm. A round's record holds
day d's metrics of the arm's model and of M0 (``cloud_``) on the same active devices.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from clients.coda_device import BOUNDS, DAY, GLOBAL, HIST_BINS, MATCHED, ORIGIN, CoDADevice
from fedrec.coda.config import PREFIX, CoDAConfig
from fedrec.coda.data import (
    build_pool,
    data_origin,
    encode,
    item_categories,
    pack_batches,
    plain_bytes,
)
from fedrec.coda.matching import (
    Batches,
    category_vectors,
    embedding_vectors,
    knn_users,
    matched_batches,
    random_users,
    recent_index,
    zscore,
)
from fedrec.coda.model import init_ctr
from fedrec.coda.train import train_global
from fedrec.config import RunConfig, protocol_options
from fedrec.errors import ConfigError
from fedrec.protocol import FIT, Arrays, DeviceReply
from fedrec.results import RunRecorder, atomic_write, dumps
from fedrec.threat_config import parse_threat_config
from fedrec.views.samples import SampleView, prepare_samples
from strategies.base import DeviceStrategy, Phase, sample_devices

MATCH = "match"
DAY_COLUMNS = ("n", "clicks", "top_clicks", "top_shown", "auc", "cloud_top_clicks", "cloud_auc",
               "received", "kept", "accepted_steps")
#: the global model of the last configuration (key -> (arrays, losses)): arms of one
#: experiment share it
GLOBAL_MODELS: dict[tuple, tuple[Arrays, list[float]]] = {}


def global_key(cfg: RunConfig, o: CoDAConfig) -> tuple:
    """Everything the global model depends on (not the arm, K, sigma or device options)."""
    return (cfg.data, cfg.train.seed, o.origin, o.period_days, o.first_day, o.exposures,
            o.history_len, o.dim, o.attention, o.hidden, o.cloud_epochs, o.cloud_lr,
            o.cloud_batch)


class CoDA(DeviceStrategy):
    """The cloud half of CoDA (module docstring)."""

    name = "coda"
    device_cls = CoDADevice
    default_model = "din"
    default_lr = 0.05
    select_metric = "test_gauc"
    options = CoDAConfig
    prefix = PREFIX
    rebuilt = frozenset({"opt", "pool", "cats", "origin", "matches", "pool_s"})

    def __init__(self, *, cfg: RunConfig, fed: SampleView, recorder: RunRecorder) -> None:
        self.opt = protocol_options(cfg, CoDAConfig)
        self.matches: dict[int, Batches] = {}
        #: per device: other users' samples and bytes received, days with matches
        self.privacy: dict[int, list[float]] = {}
        #: per active device and day: DAY_COLUMNS of its reply (paired comparisons)
        self.day_rows: list[list[float]] = []
        super().__init__(cfg=cfg, fed=fed, recorder=recorder)

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        if cfg.train.model not in ("", "din"):
            raise ConfigError(f"coda trains its DIN CTR model, not model={cfg.train.model!r}; "
                              "drop the model key")
        if parse_threat_config(cfg.raw_dict()).ldp.mechanism != "none":
            raise ConfigError("CoDA uploads nothing (its cloud has the logs), so local DP "
                              "protects nothing; use ldp=none")

    @classmethod
    def prepare_data(cls, cfg: RunConfig) -> SampleView:
        view = prepare_samples(cfg.data, protocol_options(cfg, CoDAConfig).view(cfg.data))
        if not view.log.has_time:
            raise ConfigError(f"coda simulates days but dataset {cfg.data.dataset!r} has no "
                              "timestamps (only an order); use taobao, amazon-video, "
                              "ml-1m's ratings.dat or the synthetic preset")
        return view

    def phases(self) -> tuple[Phase, ...]:
        match = (Phase(MATCH, device=False),) if self.opt.matches else ()
        return (*match, Phase(FIT, available_only=True))

    def day(self, rnd: int) -> int:
        return self.opt.first_day + rnd - 1

    # ------------------------------------------------------------------ before round 1
    def init_global(self) -> Arrays:
        o, logs = self.opt, self.cloud.logs
        t0 = time.monotonic()
        self.origin = data_origin(int(logs.ts.min()), o.origin)
        self.cats = item_categories(self.cloud.items)
        self.pool = build_pool(logs, self.cloud.n_items, o.exposures, o.history_len,
                               self.cfg.data.seed, self.origin, o.period_s)
        self.pool_s = time.monotonic() - t0
        last = int(self.pool.day.max()) if len(self.pool.day) else -1
        end = self.day(self.cfg.train.num_rounds)
        if end > last:
            raise ConfigError(f"num-rounds = {self.cfg.train.num_rounds} from {PREFIX}first-day "
                              f"= {o.first_day} simulates days up to {end}, but the data's last "
                              f"day is {last} ({PREFIX}period-days = {o.period_days}); lower "
                              f"num-rounds to {max(last - o.first_day + 1, 0)}")
        before = self.pool.day < o.first_day
        if not before.any():
            raise ConfigError(f"no sample before {PREFIX}first-day = {o.first_day}: the cloud "
                              "has nothing to train the global model on; raise it")
        key = global_key(self.cfg, o)
        if key not in GLOBAL_MODELS:
            params = init_ctr(self.cloud.n_items, int(self.cats.max()) + 1, o.dim,
                              o.attention_widths, o.hidden_widths, self.cfg.train.seed)
            say = None if self.cfg.output.quiet else (lambda m: print(f"coda global model: {m}", flush=True))
            params, losses = train_global(params, self.pool.block.take(np.flatnonzero(before)),
                                          self.cats, o.cloud_epochs, o.cloud_lr, o.cloud_batch,
                                          self.cfg.train.seed, say)
            GLOBAL_MODELS.clear()
            GLOBAL_MODELS[key] = ({GLOBAL + k: v.numpy().astype(np.float32) for k, v in params.items()},
                                  losses)
        arrays, losses = GLOBAL_MODELS[key]
        self.facts: dict[str, Any] = {
            "global_loss": losses, "global_samples": int(before.sum()), "pool_samples": len(self.pool.day),
            "origin": self.origin, "global_s": time.monotonic() - t0,
            "model_bytes": int(sum(a.nbytes for a in arrays.values()))}
        return dict(arrays)

    # ------------------------------------------------------------------ the day
    def has_local(self, rnd: int) -> np.ndarray:
        """Devices with a logged event in the ``coda-max-age`` days before day d (they hold
        local samples). -> sorted int64"""
        d, p = self.day(rnd), self.pool
        recent = (p.day < d) & (p.day >= d - self.opt.max_age)
        return np.unique(p.owner[recent])

    def select_fit_devices(self, rnd: int) -> list[int]:
        ids = self.has_local(rnd)
        if self.cfg.train.fraction_fit < 1.0:
            chosen = set(sample_devices(self.n_devices, self.cfg.train.fraction_fit,
                                        self.cfg.train.seed, rnd))
            ids = np.array([i for i in ids if int(i) in chosen], np.int64)
        return [int(i) for i in ids]

    def user_vectors(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """(users with events in the feature window, their z-scored vectors)."""
        o, p = self.opt, self.pool
        win = (p.day < d) & (p.day >= d - o.feature_days) & (p.block.label == 1)
        owner, item = p.owner[win], p.block.item[win]
        if o.feature == "items":
            users, vec = embedding_vectors(owner, item, self.global_arrays[GLOBAL + "item"])
        else:
            users, vec = category_vectors(owner, self.cats[item], self.n_devices,
                                          int(self.cats.max()) + 1)
        return users, zscore(vec)

    def cloud_step(self, phase: Phase, rnd: int) -> dict[str, float]:
        """Algorithm 1 for every device of the day (the overnight matching)."""
        o, p, d = self.opt, self.pool, self.day(rnd)
        t0 = time.monotonic()
        users, vec = self.user_vectors(d)
        t1 = time.monotonic()
        if o.neighbours == "knn":
            nn = knn_users(vec, o.k)
        else:
            nn = random_users(len(users), o.k, self.cfg.train.seed, d)
        t2 = time.monotonic()
        recent = np.flatnonzero((p.day < d) & (p.day >= d - o.match_days))
        index = recent_index(recent, p.owner[recent])
        targets = set(self.select_fit_devices(rnd))
        self.matches = {}
        for row, u in enumerate(users.tolist()):
            if u in targets:
                rng = np.random.default_rng([self.cfg.train.seed, d, u, 53])
                self.matches[u] = matched_batches(u, users[nn[row]], index, rng, o.batch,
                                                  o.batch_max, o.max_batches)
        sent = [np.concatenate(b) if b else np.zeros(0, np.int64) for b in self.matches.values()]
        n_ref = sum(len(s) for s in sent)
        distinct = np.unique(np.concatenate(sent)) if sent else np.zeros(0, np.int64)
        per_sample = plain_bytes(p.block.take(distinct[:1])) if len(distinct) else 0
        return {"users": float(len(users)), "devices_matched": float(len(self.matches)),
                "samples_mean": n_ref / max(len(self.matches), 1),
                "batches_mean": float(np.mean([len(b) for b in self.matches.values()])) if self.matches else 0.0,
                # storage of the day's matched samples: each stored once + 8-byte ids (the
                # paper's de-duplication) vs a copy per receiving device
                "store_dedup_bytes": float(len(distinct) * per_sample + 8 * n_ref),
                "store_copies_bytes": float(n_ref * per_sample),
                "vectors_s": t1 - t0, "knn_s": t2 - t1, "batches_s": time.monotonic() - t2}

    def phase_broadcast(self, phase: Phase, rnd: int) -> Arrays:
        return self.global_arrays if phase.name == FIT else {}

    def phase_own(self, phase: Phase, rnd: int, device_ids: list[int]) -> dict[int, Arrays]:
        """Each device's matched batches, encoded as the paper sends them."""
        if phase.name != FIT or not self.opt.matches:
            return {}
        own: dict[int, Arrays] = {}
        block = self.pool.block
        for dev in device_ids:
            batches = self.matches.get(dev, [])
            if not batches:
                continue
            data, bounds = pack_batches([encode(block.take(b)) for b in batches])
            own[dev] = {MATCHED: data, BOUNDS: bounds}
            n = sum(len(b) for b in batches)
            owners = np.unique(self.pool.owner[np.concatenate(batches)])
            rec = self.privacy.setdefault(dev, [0.0, 0.0, 0.0, 0.0, 0.0])
            rec[0] += n
            rec[1] += data.nbytes
            rec[2] += 1
            rec[3] += len(owners)
            rec[4] += plain_bytes(block.take(np.concatenate(batches)))
        return own

    def round_config(self, rnd: int, kind: str) -> dict[str, Any]:
        return {DAY: self.day(rnd), ORIGIN: self.origin}

    # ------------------------------------------------------------------ the day's results
    def aggregate(self, rnd: int, replies: list[DeviceReply]) -> dict[str, float]:
        """Day d's metrics over the active devices (local samples and a click on day d),
        for the arm's model and M0 (``cloud_``); written unprefixed as ``test_*``."""
        o = self.opt
        active = [r for r in replies if r.metrics.get("active", 0.0) > 0]
        out: dict[str, float] = {"day": float(self.day(rnd)), "active_devices": float(len(active))}
        for prefix in ("", "cloud_"):
            out.update(day_summary(active, prefix, o.ctr_k))
        if out.get("test_cloud_ctr@k"):
            out["test_ctr_lift_vs_cloud_pct"] = 100 * (out["test_ctr@k"] / out["test_cloud_ctr@k"] - 1)
        self.log.update(out)
        for r in active:         # per device-day rows for paired comparisons (coda_days.csv)
            m = r.metrics
            self.day_rows.append([r.device_id, self.day(rnd), *(m.get(k, np.nan) for k in DAY_COLUMNS)])
        got = [r for r in replies if r.metrics.get("received", 0) > 0]
        mean = lambda k, rs: float(np.mean([r.metrics.get(k, 0.0) for r in rs])) if rs else 0.0
        trained = [r for r in replies if r.metrics.get("trained")]
        return {"received_mean": mean("received", got), "kept_mean": mean("kept", got),
                "dropped_mean": mean("dropped", got), "bytes_matched_mean": mean("bytes_matched", got),
                "devices_receiving": float(len(got)), "devices_trained": float(len(trained)),
                "accepted_steps_mean": mean("accepted_steps", trained),
                "rejected_steps_mean": mean("rejected_steps", trained),
                "rollbacks": float(sum(r.metrics.get("rollback", 0.0) for r in trained)),
                "local_size_mean": mean("local_size", replies),
                "filter_s_per_device": mean("filter_s", replies),
                "train_s_per_device": mean("train_s", replies)}

    def finish(self) -> None:
        super().finish()
        self.recorder.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.recorder.dir / "coda_cloud.json", dumps(self.facts))
        atomic_write(self.recorder.dir / "coda_privacy.json", dumps(privacy_summary(self.privacy)))
        lines = [",".join(("device_id", "day", *DAY_COLUMNS))]
        lines += [",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row)
                  for row in self.day_rows]
        atomic_write(self.recorder.dir / "coda_days.csv", "\n".join(lines) + "\n")


def hist_auc(hp: np.ndarray, hn: np.ndarray) -> float:
    """AUC from click / non-click counts per score bin (ties within a bin count half)."""
    p, n = hp.sum(), hn.sum()
    if p == 0 or n == 0:
        return float("nan")
    below = np.cumsum(hn) - hn
    return float((hp * (below + 0.5 * hn)).sum() / (p * n))


def day_summary(active: list[DeviceReply], prefix: str, k: int) -> dict[str, float]:
    """Per-user AUC averaged over users, overall AUC (binned), log-loss, CTR proxy."""
    bins = len(HIST_BINS) + 1
    m = [r.metrics for r in active]
    total = lambda key: float(sum(x.get(f"{prefix}{key}", 0.0) for x in m))
    aucs = [x[f"{prefix}auc"] for x in m if np.isfinite(x.get(f"{prefix}auc", np.nan))]
    hp = np.array([total(f"hp{j}") for j in range(bins)])
    hn = np.array([total(f"hn{j}") for j in range(bins)])
    n = total("n")
    return {f"test_{prefix}gauc": float(np.mean(aucs)) if aucs else float("nan"),
            f"test_{prefix}auc": hist_auc(hp, hn),
            f"test_{prefix}logloss": total("logloss_sum") / n if n else float("nan"),
            f"test_{prefix}ctr@k": total("top_clicks") / max(total("top_shown"), 1.0),
            f"day_{prefix}top_clicks": total("top_clicks"),
            f"day_{prefix}top_shown": total("top_shown"),
            f"day_{prefix}samples": n}


def privacy_summary(privacy: dict[int, list[float]]) -> dict[str, Any]:
    """Other users' data each device received over the run (the cloud knows what it sent)."""
    if not privacy:
        return {"devices_receiving": 0, "samples_total": 0, "bytes_total": 0}
    a = np.array(list(privacy.values()))
    return {"devices_receiving": len(privacy),
            "samples_total": int(a[:, 0].sum()), "bytes_total": int(a[:, 1].sum()),
            "samples_per_device_mean": float(a[:, 0].mean()),
            "samples_per_device_max": int(a[:, 0].max()),
            "bytes_per_device_mean": float(a[:, 1].mean()),
            "bytes_per_device_day_mean": float(a[:, 1].sum() / a[:, 2].sum()),
            "other_users_per_device_day_mean": float(a[:, 3].sum() / a[:, 2].sum()),
            "size_reduction_pct": float(100 * (1 - a[:, 1].sum() / max(a[:, 4].sum(), 1)))}
