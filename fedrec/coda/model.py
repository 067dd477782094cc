"""CoDA's two networks as pure functions of a parameter dict (so a cohort's per-device copies
stack and ``torch.func.vmap`` runs them as one computation).

CTR model (the paper's Fig. 8, DIN): an item is its item embedding next to its category
embedding (width E = 2 * dim); the target attends over the history,
``a(h, t) = MLP([h, t, h - t, h * t])``, interest ``sum_l a_l h_l`` (no softmax, as DIN), logit
``MLP([interest, t, interest * t])``. ReLU activations.

Sample classifier (Sec. 3.4, "DIN pruned"): only the behaviour sequence is its input: the
masked mean of the history items' category embeddings (``clf_dim`` wide, the paper's 3),
then an MLP to a logit. No target item, so no target attention.

Inputs (one device; vmap adds a leading device axis):
  hist int64 [B, L] rows into the item table (padding: any row, masked), hcat int64 [B, L]
  category codes, hmask float [B, L] (1 real, 0 pad), item int64 [B] rows, cat int64 [B].
"""

from __future__ import annotations

import itertools

import torch

Params = dict[str, torch.Tensor]
INIT_STD = 0.1


def _linear(gen: torch.Generator, fan_in: int, fan_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights [fan_in, fan_out], zero bias [fan_out]."""
    bound = fan_in ** -0.5
    w = (torch.rand(fan_in, fan_out, generator=gen) * 2 - 1) * bound
    return w, torch.zeros(fan_out)


def _mlp(gen: torch.Generator, name: str, widths: tuple[int, ...]) -> Params:
    out: Params = {}
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        out[f"{name}{i}.w"], out[f"{name}{i}.b"] = _linear(gen, a, b)
    return out


def _run_mlp(p: Params, name: str, x: torch.Tensor, layers: int) -> torch.Tensor:
    """ReLU between layers, none after the last. x [..., in] -> [..., out]"""
    for i in range(layers):
        x = x @ p[f"{name}{i}.w"] + p[f"{name}{i}.b"]
        if i < layers - 1:
            x = torch.relu(x)
    return x


def init_ctr(n_items: int, n_cats: int, dim: int, attention: tuple[int, ...],
             hidden: tuple[int, ...], seed: int) -> Params:
    """The CTR model's parameters: item [I, dim], cat [C, dim], att* (4E -> ... -> 1),
    head* (3E -> ... -> 1)."""
    gen = torch.Generator().manual_seed(seed)
    e = 2 * dim
    return {"item": torch.randn(n_items, dim, generator=gen) * INIT_STD,
            "cat": torch.randn(n_cats, dim, generator=gen) * INIT_STD,
            **_mlp(gen, "att", (4 * e, *attention, 1)),
            **_mlp(gen, "head", (3 * e, *hidden, 1))}


def layers(p: Params, name: str) -> int:
    return sum(1 for k in p if k.startswith(name) and k.endswith(".w"))


def attention(p: Params, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``MLP([h, t, h - t, h * t])`` without building the [B, L, 4E] concatenation: with the
    first layer's W = [W1; W2; W3; W4] by input block, the pre-activation is
    ``h (W1 + W3) + t (W2 - W3) + (h * t) W4 + b``. h [B, L, E], t [B, E] -> [B, L, 1]"""
    w, e = p["att0.w"], h.shape[-1]
    w1, w2, w3, w4 = w[:e], w[e:2 * e], w[2 * e:3 * e], w[3 * e:]
    z = h @ (w1 + w3) + (t @ (w2 - w3) + p["att0.b"]).unsqueeze(-2) + (h * t.unsqueeze(-2)) @ w4
    n = layers(p, "att")
    for i in range(1, n):
        z = torch.relu(z) @ p[f"att{i}.w"] + p[f"att{i}.b"]
    return z


def ctr_logits(p: Params, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """Click logits [B] (module docstring)."""
    h = torch.cat([p["item"][x["hist"]], p["cat"][x["hcat"]]], -1)          # [B, L, E]
    t = torch.cat([p["item"][x["item"]], p["cat"][x["cat"]]], -1)           # [B, E]
    a = attention(p, h, t).squeeze(-1) * x["hmask"]                          # [B, L]
    interest = (a.unsqueeze(-1) * h).sum(1)                                   # [B, E]
    head_in = torch.cat([interest, t, interest * t], -1)                      # [B, 3E]
    return _run_mlp(p, "head", head_in, layers(p, "head")).squeeze(-1)


def init_classifier(n_cats: int, dim: int, hidden: tuple[int, ...], seed: int) -> Params:
    """The sample classifier: cat [C, dim], mlp* (dim -> hidden... -> 1)."""
    gen = torch.Generator().manual_seed(seed)
    return {"cat": torch.randn(n_cats, dim, generator=gen) * INIT_STD,
            **_mlp(gen, "mlp", (dim, *hidden, 1))}


def classifier_logits(p: Params, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """"Looks local" logits [B] from the behaviour sequence only (``hcat``, ``hmask``)."""
    emb = p["cat"][x["hcat"]] * x["hmask"].unsqueeze(-1)                      # [B, L, dim]
    pooled = emb.sum(1) / x["hmask"].sum(1, keepdim=True).clamp(min=1.0)      # [B, dim]
    return _run_mlp(p, "mlp", pooled, layers(p, "mlp")).squeeze(-1)
