"""CoDA's on-device half (Gu et al.; docs/coda.md): one call = one simulated day.

On day d a device (1) files its own samples logged since its last day into the local table
(lifecycle and cap, ``fedrec.coda.tables``), (2) decodes the matched batches the cloud sent
(other users' samples, no user ids), (3) trains its persistent sample classifier on the local
samples (label 1) and a third of the matched ones (label 0) and keeps the other two thirds
scored >= sigma (Algorithm 2), (4) trains its personalised CTR model M from its last M (the
cloud model M0 the first time) on the local training samples and the kept ones, one
mini-batch step at a time, each kept only if the local validation AUC improves
(Algorithm 3; M_buf / rollback), and (5) serves day d: its day-d samples are scored with M
and with M0 (the Cloud arm), which gives the day's metrics.

Nothing is uploaded: the reply's upload is empty (tests/coda/test_protocol.py); M, M's
classifier and the tables are the device's private state. A cohort runs (3) and (4) as one
batched computation over stacked per-device parameters (``fedrec.coda.train``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from clients.device import DeviceLogic
from fedrec.coda.config import CoDAConfig
from fedrec.coda.data import (
    Block,
    DeviceLog,
    decode,
    device_log,
    empty_block,
    item_categories,
    unpack_batches,
)
from fedrec.coda.model import Params, classifier_logits, init_classifier
from fedrec.coda.tables import cap_outside, sessions, split_local, update_local
from fedrec.coda.train import (
    adam_fit,
    classifier_scores,
    ctr_scores,
    ctr_scores_chunked,
    greedy_fit,
    inputs,
    pad_stack,
    pad_steps,
    schedule,
    stack,
    unstack,
)
from fedrec.config import RunConfig, protocol_options
from fedrec.protocol import FIT, Arrays, DeviceReply, DeviceTask

GLOBAL = "g/"          # broadcast: the cloud model M0, one array per parameter
MATCHED = "matched"    # own: the day's encoded batches, concatenated (uint8)
BOUNDS = "bounds"      # own: batch offsets into MATCHED, int64 [n_batches + 1]
DAY = "day"            # config: the simulated day of this round
ORIGIN = "origin"      # config: unix time of day 0's start (days count from it)
HIST_BINS = np.linspace(-6.0, 3.0, 99)   # logit bin edges of the overall-AUC histograms
NEVER = -(1 << 62)
FLOAT_BYTES = 4


@dataclass
class Day:
    """One device's working set for a day (numpy; the torch parts are stacked later)."""

    task: DeviceTask
    log: DeviceLog
    local: np.ndarray          # local table: indices into log [n]
    matched: Block             # the day's matched samples, arrival order
    waiting: Block             # outside table: filtered samples waiting for training
    waiting_score: np.ndarray  # their classifier scores [m]
    rows: np.ndarray           # the item ids this device's tables hold, sorted [T]
    clf: Params
    kept: int = 0
    clf_trained: bool = False

    @property
    def today(self) -> int:
        return int(self.task.config[DAY])


class CoDADevice(DeviceLogic):
    """A device (or a cohort) living one CoDA day (module docstring)."""

    scored_model = None        # CoDA scores CTR samples, not item rankings

    def __init__(self, cfg: RunConfig, fed: Any) -> None:
        super().__init__(cfg, fed)
        self.opt: CoDAConfig = protocol_options(cfg, CoDAConfig)
        self.cats = item_categories(fed.device(0).side) if fed.n_devices else np.zeros(0)
        self.n_cats = int(self.cats.max()) + 1 if len(self.cats) else 1
        self.lr = cfg.train.lr          # lr = 0 resolves to CoDA.default_lr (experiments.setup)

    def handlers(self) -> dict[str, Callable[[DeviceTask], DeviceReply]]:
        return {FIT: self.fit}

    def fit(self, task: DeviceTask) -> DeviceReply:
        return self.days([task])[0]

    def run_many(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        if {t.kind for t in tasks} == {FIT}:
            return self.days(tasks)
        return super().run_many(tasks)

    # ------------------------------------------------------------------ (1) and (2)
    def open_day(self, task: DeviceTask) -> Day:
        o, state = self.opt, task.state or {}
        lg = device_log(self.fed.device(task.device_id), int(task.config[ORIGIN]), o.period_s)
        today = int(task.config[DAY])
        # the last day this device served; its samples of that day are filed today
        last = int(state[DAY][0]) - 1 if DAY in state else NEVER
        local = update_local(state.get("local", np.zeros(0, np.int64)), lg.day, last, today,
                             o.max_age, o.local_cap)
        batches = unpack_batches(task.own[MATCHED], task.own[BOUNDS]) if MATCHED in task.own else []
        matched = Block.concat([decode(b, o.history_len) for b in batches], o.history_len)
        waiting = Block(*(np.asarray(state[k]) for k in ("out_item", "out_label", "out_hist"))) \
            if "out_item" in state else empty_block(o.history_len)
        score = np.asarray(state.get("out_score", np.zeros(0, np.float32)), np.float32)
        own = lg.block.take(np.r_[local, np.flatnonzero(lg.day == today)].astype(np.int64))
        parts = [b.item for b in (own, matched, waiting)] + [b.hist.ravel()
                                                            for b in (own, matched, waiting)]
        parts.append(np.asarray(state.get("m/item_ids", np.zeros(0, np.int64))))
        rows = np.unique(np.concatenate(parts).astype(np.int64))
        rows = rows[rows >= 0]
        clf = {k[4:]: torch.from_numpy(np.asarray(v)) for k, v in state.items()
               if k.startswith("clf/")} or init_classifier(
            self.n_cats, o.clf_dim, o.clf_widths, seed=self.cfg.train.seed * 1_000_003 + task.device_id)
        return Day(task, lg, local, matched, waiting, score, rows, clf)

    # ------------------------------------------------------------------ (3) Algorithm 2
    def filter_day(self, days: list[Day]) -> None:
        """Train each classifier on local (1) + first third of matched (0); keep the other
        two thirds scored >= sigma (all of them with ``coda-filter = false``)."""
        o = self.opt
        work = [d for d in days if len(d.matched)]
        if not o.filter:
            for d in work:
                self.add_waiting(d, d.matched, np.ones(len(d.matched), np.float32))
            return
        work = [d for d in work if len(d.local)]
        if not work:
            return
        n1 = [len(d.matched) // 3 for d in work]
        data = [inputs(Block.concat([d.log.block.take(d.local), d.matched.take(np.arange(k))],
                                    o.history_len), d.rows, self.cats) for d, k in zip(work, n1, strict=True)]
        for feats, d, k in zip(data, work, n1, strict=True):
            feats["label"] = np.r_[np.ones(len(d.local)), np.zeros(k)].astype(np.float32)
        steps = schedule([len(v["item"]) for v in data], o.device_batch,
                         [d.task.rng for d in work], o.clf_epochs)
        clf = adam_fit(stack([d.clf for d in work]), classifier_logits, pad_stack(data)[0], steps,
                       o.clf_lr)
        rest = [inputs(d.matched.take(np.arange(k, len(d.matched))), d.rows, self.cats)
                for d, k in zip(work, n1, strict=True)]
        scores = classifier_scores(clf, pad_stack(rest)[0]).numpy()
        for i, (d, k) in enumerate(zip(work, n1, strict=True)):
            d.clf = unstack(clf, i)
            d.clf_trained = True
            s = scores[i, :len(d.matched) - k]
            keep = np.flatnonzero(s >= o.sigma)
            self.add_waiting(d, d.matched.take(keep + k), s[keep].astype(np.float32))

    def add_waiting(self, d: Day, block: Block, score: np.ndarray) -> None:
        d.kept = len(block)
        both = Block.concat([d.waiting, block], self.opt.history_len)
        sc = np.r_[d.waiting_score, score].astype(np.float32)
        keep = cap_outside(sc, self.opt.outside_cap)
        d.waiting, d.waiting_score = both.take(keep), sc[keep]

    # ------------------------------------------------------------------ (4) Algorithm 3
    def model_of(self, d: Day, m0: Params) -> Params:
        """M (the device's last model, M0 the first time) on the device's item rows."""
        state = d.task.state or {}
        p = {k: (torch.from_numpy(np.asarray(state[f"m/{k}"])) if f"m/{k}" in state else v)
             for k, v in m0.items() if k != "item"}
        item = m0["item"][torch.from_numpy(d.rows)].clone()
        if "m/item_ids" in state:
            ids = np.asarray(state["m/item_ids"], np.int64)
            item[torch.from_numpy(np.searchsorted(d.rows, ids))] = torch.from_numpy(
                np.asarray(state["m/item_rows"]))
        return {"item": item, **p}

    def train_day(self, days: list[Day], models: list[Params]) -> dict[int, Any]:
        """Greedy accepted SGD for every device with validation samples and something to
        train on; returns {position in days: GreedyStats row} and replaces their models."""
        o = self.opt
        work = []
        for i, d in enumerate(days):
            train, valid = split_local(d.local, d.log.day, d.today, o.valid_age)
            if len(valid) and len(train) + len(d.waiting):
                work.append((i, train, valid))
        if not o.trains or not work:
            return {}
        data, vdata, steps = [], [], []
        for i, train, valid in work:
            d = days[i]
            block = Block.concat([d.log.block.take(train), d.waiting], o.history_len)
            data.append(inputs(block, d.rows, self.cats))
            vdata.append(inputs(d.log.block.take(valid), d.rows, self.cats))
            steps.append(self.session_steps(len(train), len(d.waiting), d.task.rng))
        x, xmask = pad_stack(data)
        v, vmask = pad_stack(vdata)
        sched = pad_steps(steps, o.device_batch)
        T = max(len(days[i].rows) for i, _, _ in work)
        params = stack([_pad_rows(models[i], T) for i, _, _ in work])
        params, stats = greedy_fit(params, x, sched, v, vmask, self.lr, o.accept)
        logits = ctr_scores(params, x)
        per = torch.nn.functional.binary_cross_entropy_with_logits(logits, x["label"], reduction="none")
        loss = ((per * xmask).sum(1) / xmask.sum(1).clamp(min=1)).numpy()     # [D] after the day
        out = {}
        for j, (i, _, _) in enumerate(work):
            p = unstack(params, j)
            p["item"] = p["item"][:len(days[i].rows)]
            models[i] = p
            out[i] = (stats.accepted[j], stats.rejected[j], stats.improved[j],
                      len(data[j]["item"]), float(loss[j]))
            days[i].waiting, days[i].waiting_score = empty_block(o.history_len), np.zeros(0, np.float32)
        return out

    def session_steps(self, n_train: int, n_waiting: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Mini-batches of every session: the local training samples (rows 0..n_train-1)
        with each session's waiting samples (rows n_train + lo .. n_train + hi - 1)."""
        b = self.opt.device_batch
        cuts = sessions(n_waiting, self.opt.trigger) or [(0, 0)]
        out = []
        for lo, hi in cuts:
            rows = np.r_[np.arange(n_train), n_train + np.arange(lo, hi)]
            order = rows[rng.permutation(len(rows))]
            out += [order[i:i + b] for i in range(0, len(order), b)]
        return out

    # ------------------------------------------------------------------ (5) serve and report
    def days(self, tasks: list[DeviceTask]) -> list[DeviceReply]:
        torch.set_num_threads(1)
        o = self.opt
        m0 = {k[len(GLOBAL):]: torch.from_numpy(np.asarray(v)) for k, v in tasks[0].broadcast.items()
              if k.startswith(GLOBAL)}
        t0 = time.perf_counter()
        days = [self.open_day(t) for t in tasks]
        received = [len(d.matched) for d in days]
        bytes_in = [int(np.asarray(d.task.own.get(MATCHED, np.zeros(0))).nbytes) for d in days]
        t1 = time.perf_counter()
        if o.matches:
            self.filter_day(days)
        t2 = time.perf_counter()
        base = [self.model_of(d, m0) for d in days]
        models = list(base)
        trained = self.train_day(days, models)
        t3 = time.perf_counter()
        evals = self.serve(days, models, m0)
        n = len(tasks)
        replies = []
        for i, d in enumerate(days):
            acc, rej, imp, used, loss = trained.get(i, (0, 0, False, 0, float("nan")))
            metrics = {**evals[i], "received": float(received[i]), "kept": float(d.kept),
                       "dropped": float(received[i] - d.kept - (received[i] // 3 if d.clf_trained else 0)),
                       "bytes_matched": float(bytes_in[i]), "local_size": float(len(d.local)),
                       "outside_size": float(len(d.waiting)),
                       "trained": float(i in trained), "accepted_steps": float(acc),
                       "rejected_steps": float(rej), "rollback": float(i in trained and not imp),
                       "open_s": (t1 - t0) / n, "filter_s": (t2 - t1) / n,
                       "train_s": (t3 - t2) / n}
            if i in trained:
                metrics["loss"] = loss
            replies.append(DeviceReply(
                device_id=d.task.device_id, upload={}, state=self.state_of(d, models[i], m0, i in trained),
                metrics=metrics, num_examples=int(used),
                flops=self.flops(int(used), acc + rej, len(d.local)),
                peak_mem_bytes=self.memory(models[i], d)))
        return replies

    def serve(self, days: list[Day], models: list[Params], m0: Params) -> list[dict[str, float]]:
        """Day d's samples scored with M and with M0 (``cloud_``)."""
        evals = [np.flatnonzero(d.log.day == d.today) for d in days]
        data = [inputs(d.log.block.take(e), d.rows, self.cats) for d, e in zip(days, evals, strict=True)]
        T = max(len(d.rows) for d in days)
        mine = ctr_scores_chunked(stack([_pad_rows(m, T) for m in models]), data)
        cloud = ctr_scores_chunked(stack([_pad_rows(self.cloud_rows(m0, d), T) for d in days]), data)
        out = []
        for i, d in enumerate(days):
            y = data[i]["label"]
            m: dict[str, float] = {}
            if len(y):
                m.update(day_metrics(mine[i], y, self.opt.ctr_k, ""))
                m.update(day_metrics(cloud[i], y, self.opt.ctr_k, "cloud_"))
                m["active"] = float(len(d.local) > 0 and y.sum() > 0)
            out.append(m)
        return out

    def cloud_rows(self, m0: Params, d: Day) -> Params:
        return {**m0, "item": m0["item"][torch.from_numpy(d.rows)]}

    def state_of(self, d: Day, model: Params, m0: Params, trained: bool) -> Arrays:
        """What stays on the device: its day, tables, classifier and M (item rows that differ
        from M0 only)."""
        state = dict(d.task.state or {})
        state.update({DAY: np.array([d.today], np.int64), "local": d.local.astype(np.int64),
                      "out_item": d.waiting.item, "out_label": d.waiting.label,
                      "out_hist": d.waiting.hist, "out_score": d.waiting_score})
        if d.clf_trained:
            state.update({f"clf/{k}": v.detach().numpy().astype(np.float32) for k, v in d.clf.items()})
        if trained:
            item = model["item"].detach()
            differ = (item != m0["item"][torch.from_numpy(d.rows)]).any(1).numpy()
            old = {}
            if "m/item_ids" in state:
                old = dict(zip(np.asarray(state["m/item_ids"]).tolist(),
                               np.asarray(state["m/item_rows"]), strict=True))
            old.update(zip(d.rows[differ].tolist(), item.numpy()[differ], strict=True))
            ids = np.array(sorted(old), np.int64)
            state["m/item_ids"] = ids
            state["m/item_rows"] = (np.stack([old[i] for i in ids.tolist()]).astype(np.float32)
                                    if len(ids) else np.zeros((0, item.shape[1]), np.float32))
            state.update({f"m/{k}": v.detach().numpy().astype(np.float32)
                          for k, v in model.items() if k != "item"})
        return state

    def flops(self, used: int, steps: int, local: int) -> float:
        """Rough multiply-adds: CTR forward per sample x3 for training, validation every step,
        classifier negligible."""
        o = self.opt
        e = 2 * o.dim
        att = o.history_len * (4 * e * o.attention_widths[0])
        per = float(att + 3 * e * o.hidden_widths[0])
        return 3.0 * per * used + per * steps * min(local, o.local_cap)

    def memory(self, model: Params, d: Day) -> float:
        """M, M_buf, M0's rows and one mini-batch's attention activations (floats x 4 B)."""
        o = self.opt
        params = sum(v.numel() for v in model.values()) * 3
        acts = o.device_batch * o.history_len * 4 * 2 * o.dim * 3
        return float(FLOAT_BYTES * (params + acts))


def _pad_rows(p: Params, rows: int) -> Params:
    """The item table padded with zero rows to ``rows`` (stacking devices)."""
    item = p["item"]
    if len(item) < rows:
        item = torch.cat([item, torch.zeros(rows - len(item), item.shape[1])])
    return {**p, "item": item}


def auc(scores: np.ndarray, label: np.ndarray) -> float:
    """Exact AUC with ties counted half; NaN with one class."""
    from scipy.stats import rankdata

    pos = label > 0.5
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(scores)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def day_metrics(logits: np.ndarray, label: np.ndarray, k: int, prefix: str) -> dict[str, float]:
    """One device-day: AUC, log-loss sum, CTR proxy (clicks in the top-k of the day's
    samples) and the logit histograms of clicks and non-clicks (overall AUC)."""
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    eps = 1e-7
    ll = -(label * np.log(p + eps) + (1 - label) * np.log(1 - p + eps))
    top = np.argsort(-logits, kind="stable")[:k]
    bins = np.searchsorted(HIST_BINS, logits)
    hp = np.bincount(bins[label > 0.5], minlength=len(HIST_BINS) + 1)
    hn = np.bincount(bins[label < 0.5], minlength=len(HIST_BINS) + 1)
    out = {f"{prefix}auc": auc(logits, label), f"{prefix}logloss_sum": float(ll.sum()),
           f"{prefix}n": float(len(label)), f"{prefix}clicks": float(label.sum()),
           f"{prefix}top_clicks": float(label[top].sum()), f"{prefix}top_shown": float(len(top))}
    out.update({f"{prefix}hp{j}": float(v) for j, v in enumerate(hp) if v})
    out.update({f"{prefix}hn{j}": float(v) for j, v in enumerate(hn) if v})
    return out
