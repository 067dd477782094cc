"""MC-SF's slow (cloud) and fast (device) models as pure functions of parameter dicts, so a
cohort's per-device copies of the fast model stack and ``torch.func.vmap`` runs them at once.

The equations are ``../shared/docs/protocols/mcsf.md``'s reconstruction (the paper text lost
them). Shapes: B events, C candidates each, Lc / Lm window lengths, d = item and hidden width.

Slow (Eqs. 1, 5, 6):
  r_c  = sum_l a(h_l, e_i) h_l,  a = MLP_att([h, e, h - e, h * e])   (DIN, no softmax)
  F2S: r~_e = GRU_n(e_i, r^_n) (one step of the cloud's GRU_n copy from the uploaded memory),
       alpha = sigmoid(w [r~_e; e_i] + b) (``reweight``: scalar, vector or none), r_e = alpha r~_e
  y_s  = MLP_s([r_c; r_e; e_i])  (without F2S: [r_c; e_i])
Fast (Eqs. 3, 4, 7, 8):
  S2F: h^p_0 = tanh(W_p n(r_c) + b_p), h^n_0 = tanh(W_n n(r_e) + b_n)  (else 0), n = layer norm
  r_p = GRU_p over the click window, r_n = GRU_n over the exposure window (last states)
  y_f = MLP_f([r_p; r_n; n(r_c); e_i])  (without S2F: [r_p; r_n; e_i])
Negative memory (F2S upload): r^_n = GRU_n over an exposure window from h = 0.

The fast model reads item embeddings from the slow model's table E (sent to the device, row
by row, frozen there): the fast parameters are the GRUs, the S2F maps and MLP_f.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedrec.coda.model import _linear, _mlp, _run_mlp, layers

Params = dict[str, torch.Tensor]
INIT_STD = 0.1


@dataclass(frozen=True)
class Shape:
    """Model structure: item count, width d, attention and MLP hidden widths, switches."""

    n_items: int
    dim: int
    attention: tuple[int, ...]
    hidden: tuple[int, ...]
    f2s: bool
    s2f: bool
    reweight: str = "scalar"


def run_mlp(p: Params, name: str, x: torch.Tensor) -> torch.Tensor:
    """CoDA's ReLU MLP ``name0..nameK`` (no activation after the last). [..., in] -> [..., out]"""
    return _run_mlp(p, name, x, layers(p, name))


def _gru(gen: torch.Generator, name: str, d: int) -> Params:
    bound = d ** -0.5
    return {f"{name}.w_ih": (torch.rand(d, 3 * d, generator=gen) * 2 - 1) * bound,
            f"{name}.w_hh": (torch.rand(d, 3 * d, generator=gen) * 2 - 1) * bound,
            f"{name}.b_ih": torch.zeros(3 * d), f"{name}.b_hh": torch.zeros(3 * d)}


def gru_step(p: Params, name: str, gx: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One GRU step (PyTorch's gate order r, z, n) from input projections ``gx`` = x W_ih +
    b_ih [..., 3d] and state h [..., d]. -> [..., d]"""
    gh = h @ p[f"{name}.w_hh"] + p[f"{name}.b_hh"]
    xr, xz, xn = gx.chunk(3, -1)
    hr, hz, hn = gh.chunk(3, -1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def gru_run(p: Params, name: str, x: torch.Tensor, mask: torch.Tensor,
            h: torch.Tensor) -> torch.Tensor:
    """GRU over a left-padded window: x [B, L, d], mask [B, L] (1 real), h [B, K, d] (K = 1 or
    C starting states); padded steps leave the state as it is. -> last state [B, K, d]"""
    gx = (x @ p[f"{name}.w_ih"] + p[f"{name}.b_ih"]).unsqueeze(2)            # [B, L, 1, 3d]
    # unbind, not gx[:, t]: the backward of L selects writes L zero-filled [B, L, 1, 3d]
    # gradients (O(L^2) memory traffic, 3/4 of a cohort's fit); unbind's is one stack
    for g, m in zip(gx.unbind(1), (mask[:, :, None, None] > 0).unbind(1), strict=True):
        h = torch.where(m, gru_step(p, name, g, h), h)                        # m [B, 1, 1]
    return h


# ---------------------------------------------------------------------- slow
def init_slow(s: Shape, seed: int) -> Params:
    gen = torch.Generator().manual_seed(seed)
    d = s.dim
    p: Params = {"emb": torch.randn(s.n_items, d, generator=gen) * INIT_STD,
                 **_mlp(gen, "att", (4 * d, *s.attention, 1)),
                 **_mlp(gen, "head", ((3 if s.f2s else 2) * d, *s.hidden, 1))}
    if s.f2s:
        p.update(_gru(gen, "gs", d))
        if s.reweight != "none":
            width = 1 if s.reweight == "scalar" else d
            p["rw.w"], p["rw.b"] = _linear(gen, 2 * d, width)
    return p


def embed(table: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``table`` for ``ids`` (PAD -> zero) and the mask (float, 1 real)."""
    mask = (ids >= 0).to(table.dtype)
    return table[ids.clamp(min=0)] * mask.unsqueeze(-1), mask


def din_interest(p: Params, h: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """r_c = sum_l a(h_l, t) h_l. h [B, L, d], mask [B, L], t [B, C, d] -> [B, C, d]"""
    w, d = p["att0.w"], h.shape[-1]
    w1, w2, w3, w4 = w[:d], w[d:2 * d], w[2 * d:3 * d], w[3 * d:]
    z = ((h @ (w1 + w3)).unsqueeze(1) + (t @ (w2 - w3) + p["att0.b"]).unsqueeze(2)
         + (t.unsqueeze(2) * h.unsqueeze(1)) @ w4)                            # [B, C, L, A]
    for i in range(1, layers(p, "att")):
        z = torch.relu(z) @ p[f"att{i}.w"] + p[f"att{i}.b"]
    a = z.squeeze(-1) * mask.unsqueeze(1)                                     # [B, C, L]
    return a @ h                                                              # [B, C, d]


def exposure_feature(p: Params, s: Shape, t: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
    """r_e (Eq. 5): t [B, C, d] candidates, mem [B, d] negative memory -> [B, C, d]"""
    gx = t @ p["gs.w_ih"] + p["gs.b_ih"]
    r = gru_step(p, "gs", gx, mem.unsqueeze(1).expand_as(t))
    if s.reweight == "none":
        return r
    alpha = torch.sigmoid(torch.cat([r, t], -1) @ p["rw.w"] + p["rw.b"])      # [B, C, 1|d]
    return alpha * r


def slow_parts(p: Params, s: Shape, x: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(r_c, r_e or None, e_i) for x = slow [B, Lc], cand [B, C], mem [B, d]."""
    h, mask = embed(p["emb"], x["slow"])
    t = p["emb"][x["cand"]]                                                   # [B, C, d]
    rc = din_interest(p, h, mask, t)
    re = exposure_feature(p, s, t, x["mem"]) if s.f2s else None
    return rc, re, t


def slow_logits(p: Params, s: Shape, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """y_s logits [B, C] (module docstring)."""
    rc, re, t = slow_parts(p, s, x)
    return run_mlp(p, "head", torch.cat([rc, t] if re is None else [rc, re, t], -1)).squeeze(-1)


@torch.no_grad()
def s2f_features(p: Params, s: Shape, x: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """What the cloud sends per candidate: r_c, r_e [B, C, d] (r_e = 0 without F2S)."""
    rc, re, _ = slow_parts(p, s, x)
    return rc, torch.zeros_like(rc) if re is None else re


# ---------------------------------------------------------------------- fast
def init_fast(s: Shape, seed: int) -> Params:
    gen = torch.Generator().manual_seed(seed + 1)
    d = s.dim
    p: Params = {**_gru(gen, "gp", d), **_gru(gen, "gn", d),
                 **_mlp(gen, "mlp", ((4 if s.s2f else 3) * d, *s.hidden, 1))}
    if s.s2f:
        p["ip.w"], p["ip.b"] = _linear(gen, d, d)
        p["in.w"], p["in.b"] = _linear(gen, d, d)
    return p


def unit(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free layer norm over the last axis: the slow model's r_c (an unnormalised
    attention sum over up to Lc items) on the fast model's scale."""
    return F.layer_norm(x, x.shape[-1:])


def fast_logits(p: Params, s: Shape, x: dict[str, torch.Tensor], table: torch.Tensor) -> torch.Tensor:
    """y_f logits [B, C]: x = clicks, expo [B, Lm], cand [B, C] and, with S2F, rc, re
    [B, C, d]; ``table`` [I, d] the (frozen) item embeddings."""
    hc, mc = embed(table, x["clicks"])
    he, me = embed(table, x["expo"])
    t = table[x["cand"]]                                                      # [B, C, d]
    B, C, d = t.shape
    if s.s2f:
        rc, re = unit(x["rc"]), unit(x["re"])
        h0p = torch.tanh(rc @ p["ip.w"] + p["ip.b"])
        h0n = torch.tanh(re @ p["in.w"] + p["in.b"])
    else:
        h0p = h0n = t.new_zeros(B, 1, d)
    rp = gru_run(p, "gp", hc, mc, h0p).expand(B, C, d)
    rn = gru_run(p, "gn", he, me, h0n).expand(B, C, d)
    feats = [rp, rn, rc, t] if s.s2f else [rp, rn, t]
    return run_mlp(p, "mlp", torch.cat(feats, -1)).squeeze(-1)


@torch.no_grad()
def negative_memory(p: Params, window: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """r^_n: GRU_n over exposure windows [P, Lm] from h = 0. -> [P, d]"""
    he, me = embed(table, window)
    h = he.new_zeros(window.shape[0], 1, table.shape[1])
    return gru_run(p, "gn", he, me, h).squeeze(1)
