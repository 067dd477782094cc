"""The paper's centralised MC-SF pipeline (one slow-fast cycle) and its baselines, on a
sample view (Tables 2-3, Fig. 4, Fig. 5 of Chen, Yao et al.; docs/mcsf.md).

Every model is trained in its phase and scored on the same test events and candidates:

1. DIN (the slow model without F2S) trains ``slow_pretrain_epochs`` on the slow phase; its
   item table E is then frozen: the fast models and the negative memory read it.
2. The independent fast model (GRUs, no S2F) trains on the slow phase's last
   ``fast_pretrain`` events per user (decision 7(i): GRU_n exists before the first upload).
3. Negative memories at every upload point (that model's GRU_n over E), as devices would send.
4. Slow, another ``slow_epochs`` from step 1 (E frozen): "DIN" without F2S, "MC-SF slow" with
   it (its head starts as DIN's with zero weight on r_e, its GRU_n copy as the device's).
5. Fast, ``fast_epochs`` on the fast phase from step 2: "fast" without S2F and "MC-SF fast"
   with the S2F features of the MC-SF slow model (its new weights start at zero, so it
   starts as the independent fast model). The ``-tuned`` variants train their own copy of E
   (steps 2 and 5) instead of reading it frozen.
Baselines (own embeddings): GRU4Rec and NeuMF (fast, trained like step 2 then 5), DIN+X
(X plus a learnt weight times DIN's logit), SASRec (slow, the slow phase, as many epochs as
DIN). Slow models read the slow phase's clicks only (even at test); fast models every click
and exposure before the target. Ranks: the target among its 1 + N candidates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.sparse import csr_matrix

from fedrec.errors import ConfigError
from fedrec.mcsf.config import MCSFConfig
from fedrec.mcsf.data import Events, held_out_events, memory_points, seen_items, training_events
from fedrec.mcsf.model import Params, Shape, init_fast, init_slow, negative_memory, slow_logits
from fedrec.mcsf.train import (
    Scorer,
    Tensors,
    adam_train,
    as_tensors,
    fast_fn,
    fast_scorer,
    full_ranks,
    sampled_ranks,
    scores,
    slow_fn,
    slow_scorer,
    with_s2f,
)
from fedrec.metrics import as_csr
from fedrec.models.base import Batch
from fedrec.models.gru4rec import GRU4Rec
from fedrec.models.ncf import NeuMF
from fedrec.models.sasrec import SASRec
from fedrec.views.config import DEVICE, PRE
from fedrec.views.samples import SampleView

SLOW_MODELS = ("sasrec", "din", "mcsf-slow")
FAST_MODELS = ("neumf", "gru4rec", "din+neumf", "din+gru4rec", "fast", "mcsf-fast", "fast-tuned",
               "mcsf-fast-tuned")
Say = Callable[[str], None]


@dataclass(frozen=True)
class CentralOptions:
    """Epochs of the centralised pipeline (the protocol options give the rest)."""

    fast_pretrain: int = 5
    fast_epochs: int = 10
    seed: int = 0
    sasrec_blocks: int = 2
    sasrec_dropout: float = 0.2
    #: also rank every test target among all items (the device's seen items excluded) ...
    full_ranking: bool = False
    #: ... of the first ``full_devices`` devices only (0: every device)
    full_devices: int = 0

    def __post_init__(self) -> None:
        if self.full_devices < 0:
            raise ConfigError(f"full_devices must be >= 0 (0: every device), got {self.full_devices}")
        if self.full_devices and not self.full_ranking:
            raise ConfigError(f"full_devices = {self.full_devices} limits a full ranking that is "
                              "off; turn full_ranking on (--full-ranking) or drop full_devices")


@dataclass(frozen=True, eq=False)
class Split:
    """Every device's events: slow-phase targets, the slow phase's tail (fast pretraining),
    the fast phase, the test; memory windows [M, Lm] of every device's upload points;
    ``seen`` csr [E_test, I]: per test event its device's slow- and fast-phase items."""

    slow: Events
    tail: Events
    fast: Events
    test: Events
    windows: np.ndarray
    seen: csr_matrix


def gather(view: SampleView, o: MCSFConfig, tail: int) -> Split:
    """The events of every device (``Events.mem`` indexes the concatenated windows)."""
    parts: dict[str, list[Events]] = {"slow": [], "tail": [], "fast": [], "test": []}
    wins, seen, offset = [], [], 0
    kw = {"slow_len": o.slow_len, "fast_len": o.fast_len, "every": o.upload_every}
    for d in range(view.n_devices):
        dev = view.device(d)
        mem = memory_points(dev, o.upload_every, o.fast_len)
        built = {"slow": training_events(dev, PRE, exposure_negatives=o.exposure_negatives,
                                       last=o.slow_targets, **kw),
               "tail": training_events(dev, PRE, exposure_negatives=o.exposure_negatives,
                                       last=tail, **kw),
               "fast": training_events(dev, DEVICE, exposure_negatives=o.exposure_negatives, **kw),
               "test": held_out_events(dev, **kw)}
        for k, ev in built.items():
            parts[k].append(replace(ev, mem=np.where(ev.mem >= 0, ev.mem + offset, -1)))
        wins.append(mem.window)
        seen += [seen_items(dev)] * len(built["test"])
        offset += len(mem.point)
    cat = {k: Events.concat(v) for k, v in parts.items()}
    return Split(cat["slow"], cat["tail"], cat["fast"], cat["test"], np.concatenate(wins),
                 as_csr(seen, len(seen), view.n_items))


def shapes(o: MCSFConfig, n_items: int) -> tuple[Shape, Shape, Shape, Shape]:
    """DIN, MC-SF slow (F2S), independent fast, MC-SF fast (S2F)."""
    base = Shape(n_items, o.dim, o.attention_widths, o.hidden_widths, False, False, o.reweight)
    return base, replace(base, f2s=True), base, replace(base, s2f=True)


def f2s_start(din: Params, fast: Params, shape: Shape, seed: int) -> Params:
    """MC-SF slow's start: DIN's weights, zero weight on r_e, GRU_n copied from the device."""
    p = init_slow(shape, seed)
    d = shape.dim
    for k, v in din.items():
        if k != "head0.w":
            p[k] = v.clone()
    w = torch.zeros(3 * d, din["head0.w"].shape[1])
    w[:d], w[2 * d:] = din["head0.w"][:d], din["head0.w"][d:]               # [r_c; r_e; e]
    p["head0.w"] = w
    for part in ("w_ih", "w_hh", "b_ih", "b_hh"):
        p[f"gs.{part}"] = fast[f"gn.{part}"].clone()
    return p


def s2f_start(fast: Params, shape: Shape, seed: int) -> Params:
    """MC-SF fast's start: the independent fast model, zero S2F maps and r_c weights."""
    p = init_fast(shape, seed)
    d = shape.dim
    for k, v in fast.items():
        if k != "mlp0.w":
            p[k] = v.clone()
    w = torch.zeros(4 * d, fast["mlp0.w"].shape[1])
    w[:2 * d], w[3 * d:] = fast["mlp0.w"][:2 * d], fast["mlp0.w"][2 * d:]    # [r_p; r_n; r_c; e]
    p["mlp0.w"] = w
    for k in ("ip.w", "ip.b", "in.w", "in.b"):
        p[k] = torch.zeros_like(p[k])
    return p


def trainable(p: Params, frozen: tuple[str, ...] = ("emb",)) -> list[torch.Tensor]:
    return [v for k, v in p.items() if k not in frozen]


class Pipeline:
    """One centralised run: trains what ``models`` needs, returns test ranks per model."""

    def __init__(self, view: SampleView, o: MCSFConfig, c: CentralOptions,
                 say: Say | None = None) -> None:
        self.view, self.o, self.c, self.say = view, o, c, say
        self.split = gather(view, o, c.fast_pretrain)
        self.din_s, self.f2s_s, self.fast_s, self.s2f_s = shapes(o, view.n_items)
        #: DIN's training logits per event set ("tail", "fast") of this run's DIN (DIN+X)
        self._din_logits: dict[str, torch.Tensor] = {}
        #: full ranks per model of the last run (``CentralOptions.full_ranking``)
        self.full: dict[str, np.ndarray] = {}
        self.facts: dict[str, float] = {
            "slow_events": len(self.split.slow), "fast_events": len(self.split.fast),
            "tail_events": len(self.split.tail), "test_events": len(self.split.test),
            "devices": view.n_devices, "items": view.n_items}

    def train(self, params: list[torch.Tensor], fn: Callable[[torch.Tensor], torch.Tensor],
              label: torch.Tensor, epochs: int, what: str) -> list[float]:
        o = self.o
        return adam_train(params, fn, label, epochs=epochs, batch=o.batch, lr=o.lr, l2=o.l2,
                          seed=self.c.seed, progress=self.say, what=what)

    def tensors(self, ev: Events, memory: torch.Tensor | None = None) -> Tensors:
        return as_tensors(ev, memory, self.o.dim)

    def evaluate(self, name: str, score: Scorer, test: Tensors, ranks: dict[str, np.ndarray]) -> None:
        """Ranks of the test targets among their candidates (and among every item)."""
        ranks[name] = sampled_ranks(score, test)
        if self.c.full_ranking:
            t0 = time.perf_counter()
            some, seen = test, self.split.seen
            if self.c.full_devices:
                sel = np.flatnonzero(test["owner"].numpy() < self.c.full_devices)
                some = {k: v[torch.from_numpy(sel)] for k, v in test.items()}
                seen = seen[sel]
            self.full[name] = full_ranks(score, some, self.view.n_items, seen)
            if self.say is not None:
                self.say(f"{name}: full ranking in {time.perf_counter() - t0:.0f} s")

    # ------------------------------------------------------------------ steps 1-5
    def run(self, models: tuple[str, ...]) -> dict[str, np.ndarray]:
        o, c, sp = self.o, self.c, self.split
        torch.manual_seed(c.seed)
        self._din_logits, self.full = {}, {}        # each run trains its own DIN
        ranks: dict[str, np.ndarray] = {}
        slow_t = self.tensors(sp.slow)
        din0 = init_slow(self.din_s, c.seed)
        self.train(list(din0.values()), slow_fn(din0, self.din_s, slow_t), slow_t["label"],
                   o.slow_pretrain_epochs, "din pretrain")
        table = din0["emb"]
        din = {k: v.clone() for k, v in din0.items()}
        self.train(trainable(din), slow_fn(din, self.din_s, slow_t), slow_t["label"],
                   o.slow_epochs, "din")
        test0 = self.tensors(sp.test)
        self.evaluate("din", slow_scorer(din, self.din_s), test0, ranks)
        if not any(m in models for m in ("mcsf-slow", *FAST_MODELS[4:])):
            self.baselines(models, din, ranks)
            return {m: ranks[m] for m in models if m in ranks}
        tail_t = self.tensors(sp.tail)
        fast0 = self.pretrain_fast(tail_t, table, tune=False)
        memory = negative_memory(fast0, torch.from_numpy(sp.windows), table)
        slow_m = self.tensors(sp.slow, memory)
        f2s = f2s_start(din0, fast0, self.f2s_s, c.seed)
        self.train(trainable(f2s), slow_fn(f2s, self.f2s_s, slow_m), slow_m["label"],
                   o.slow_epochs, "mcsf slow")
        test_m = self.tensors(sp.test, memory)
        self.evaluate("mcsf-slow", slow_scorer(f2s, self.f2s_s), test_m, ranks)
        fast_t = self.tensors(sp.fast, memory)
        fast_s = with_s2f(fast_t, f2s, self.f2s_s)
        for suffix in ("", "-tuned"):
            if not {f"fast{suffix}", f"mcsf-fast{suffix}"} & set(models):
                continue
            start = fast0 if not suffix else self.pretrain_fast(tail_t, table, tune=True)
            fast = {k: v.clone() for k, v in start.items()}
            self.train(list(fast.values()), fast_fn(fast, self.fast_s, fast_t, table),
                       fast_t["label"], c.fast_epochs, f"fast{suffix}")
            self.evaluate(f"fast{suffix}", fast_scorer(fast, self.fast_s, table), test_m, ranks)
            s2f = s2f_start(start, self.s2f_s, c.seed)
            self.train(list(s2f.values()), fast_fn(s2f, self.s2f_s, fast_s, table),
                       fast_s["label"], c.fast_epochs, f"mcsf fast{suffix}")
            self.evaluate(f"mcsf-fast{suffix}",
                          fast_scorer(s2f, self.s2f_s, table, (f2s, self.f2s_s)), test_m, ranks)
        self.baselines(models, din, ranks)
        return {m: ranks[m] for m in models if m in ranks}

    # ------------------------------------------------------------------ baselines
    def pretrain_fast(self, tail: Tensors, table: torch.Tensor, tune: bool) -> Params:
        """The independent fast model on the slow phase's tail (``tune``: with its own copy
        of E, trained; else E frozen)."""
        fast0 = init_fast(self.fast_s, self.c.seed)
        if tune:
            fast0["table"] = table.clone()
        self.train(list(fast0.values()), fast_fn(fast0, self.fast_s, tail, table),
                   tail["label"], self.c.fast_epochs, f"fast pretrain{' (tuned E)' if tune else ''}")
        return fast0

    def baselines(self, models: tuple[str, ...], din: Params, ranks: dict[str, np.ndarray]) -> None:
        o, c, sp = self.o, self.c, self.split
        if "sasrec" in models:
            model = SASRec(n_items=self.view.n_items, dim=o.dim, max_len=o.slow_len,
                           blocks=c.sasrec_blocks, dropout=c.sasrec_dropout, seed=c.seed)
            t = self.tensors(sp.slow)
            fn = lambda idx: model.score(Batch(history=t["slow"][idx]), t["cand"][idx])
            model.train()
            self.train(list(model.parameters()), fn, t["label"],
                       o.slow_pretrain_epochs + o.slow_epochs, "sasrec")
            model.eval()
            self.evaluate("sasrec", lambda x: model.score(Batch(history=x["slow"]), x["cand"]),
                          self.tensors(sp.test), ranks)
        for name in ("neumf", "gru4rec"):
            for plus in (False, True):
                key = f"din+{name}" if plus else name
                if key in models:
                    self.evaluate(key, self.fast_baseline(name, din if plus else None),
                                  self.tensors(sp.test), ranks)

    def fast_baseline(self, name: str, din: Params | None) -> Scorer:
        """GRU4Rec (clicks window) or NeuMF (user id), optionally + a * DIN logit + b, trained
        on the slow phase's tail then on the fast phase; -> its scorer (DIN's logit computed
        on the way at evaluation)."""
        o, c, sp = self.o, self.c, self.split
        model: torch.nn.Module
        if name == "gru4rec":
            model = GRU4Rec(n_items=self.view.n_items, embedding_dim=o.dim, hidden_dim=o.dim,
                            seed=c.seed)
        else:
            model = NeuMF(n_users=self.view.n_devices, n_items=self.view.n_items, gmf_dim=o.dim,
                          mlp_layers=(2 * o.dim, o.dim, max(o.dim // 2, 1)), seed=c.seed)
        ab = torch.zeros(2)

        def own(x: Tensors) -> torch.Tensor:
            batch = (Batch(history=x["clicks"]) if name == "gru4rec" else Batch(users=x["owner"]))
            return model.score(batch, x["cand"])

        def logits_of(t: Tensors, part: str) -> Callable[[torch.Tensor], torch.Tensor]:
            din_logits = None if din is None else self.din_logits(din, t, part)

            def fn(idx: torch.Tensor) -> torch.Tensor:
                out = own({"clicks": t["clicks"][idx], "owner": t["owner"][idx],
                           "cand": t["cand"][idx]})
                return out if din_logits is None else out + ab[0] * din_logits[idx] + ab[1]
            return fn

        params = [*model.parameters(), *([ab] if din is not None else [])]
        for events, part, what in ((sp.tail, "tail", "pretrain"), (sp.fast, "fast", "fast phase")):
            t = self.tensors(events)
            self.train(params, logits_of(t, part), t["label"], c.fast_epochs,
                       f"{'din+' if din is not None else ''}{name} {what}")
        if din is None:
            return own
        return lambda x: own(x) + ab[0] * slow_logits(din, self.din_s, x) + ab[1]

    def din_logits(self, din: Params, t: Tensors, part: str) -> torch.Tensor:
        """DIN's logits of a part's candidates [E, C], computed once for both DIN+X models."""
        if part not in self._din_logits:
            self._din_logits[part] = torch.from_numpy(
                scores(slow_fn(din, self.din_s, t), len(t["cand"])))
        return self._din_logits[part]
