"""Automated Gradual Pruner (Zhu & Gupta, "To prune, or not to prune", 2017), C3DRec Eq. 4.

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n dt))^3     for t in {t0, t0 + dt, ..., t0 + n dt}

Each pruning event sets the listed weight tensors to sparsity ``s_t`` with a *level pruner*:
the ``floor(s_t * numel)`` entries of smallest magnitude become zero. Masks only shrink: an
entry pruned once stays pruned ("shut down permanently"), its gradient is zeroed and the
weight is re-zeroed after every optimiser step, in all later training (cloud and device).
Biases are never pruned. Time ``t`` is in epochs (floats: ``epoch + batch / n_batches``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from fedrec.errors import ConfigError

Masks = dict[str, torch.Tensor]  # parameter name -> bool tensor (True = kept)


@dataclass(frozen=True)
class AGPSchedule:
    """Eq. 4: from ``initial`` sparsity at epoch ``start`` to ``final`` at
    ``start + steps * every``.

    ``steps`` (n) pruning events after the first, ``every`` (dt) epochs apart.
    ``final = 0`` disables pruning.
    """

    final: float = 0.9
    initial: float = 0.0
    start: float = 0.0
    steps: int = 10
    every: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.initial <= self.final < 1.0:
            raise ConfigError(f"AGP needs 0 <= initial ({self.initial}) <= final "
                              f"({self.final}) < 1; set c3drec-model-sparsity below 1")
        if self.steps < 1 or self.every <= 0 or self.start < 0:
            raise ConfigError("AGP needs steps >= 1, every > 0 and start >= 0 (epochs)")

    @property
    def end(self) -> float:
        return self.start + self.steps * self.every


def agp_sparsity(t: float, s: AGPSchedule) -> float:
    """Target sparsity at time ``t``: Eq. 4 at the last grid point reached (``initial`` before
    ``start``, ``final`` from ``start + steps * every`` on)."""
    if t < s.start:
        return s.initial
    k = min(s.steps, math.floor((t - s.start) / s.every + 1e-9))
    return s.final + (s.initial - s.final) * (1.0 - k / s.steps) ** 3


def agp_grid(s: AGPSchedule) -> list[tuple[float, float]]:
    """The pruning events ``[(t0 + k dt, s_k) for k = 0..n]`` of Eq. 4."""
    return [(s.start + k * s.every, agp_sparsity(s.start + k * s.every, s))
            for k in range(s.steps + 1)]


def level_mask(weight: torch.Tensor, sparsity: float,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Bool mask (True = kept) pruning ``floor(sparsity * numel)`` entries of ``weight``.

    Entries already pruned by ``mask`` go first, then the smallest ``|w|``; equal magnitudes
    are pruned in flat-index order. The result is a subset of ``mask``.
    """
    n = weight.numel()
    k = math.floor(sparsity * n + 1e-9)
    score = weight.detach().abs().flatten().double()
    if mask is not None:
        score = torch.where(mask.flatten(), score, torch.full_like(score, -1.0))
    pruned = torch.zeros(n, dtype=torch.bool)
    if k > 0:
        kth = torch.kthvalue(score, k).values                       # O(n) selection
        pruned = score < kth
        ties = torch.nonzero(score == kth).flatten()                # ascending flat index
        pruned[ties[: k - int(pruned.sum())]] = True
    keep = ~pruned.reshape(weight.shape)
    return keep if mask is None else keep & mask


def prunable_names(model: nn.Module) -> list[str]:
    """The weight matrices (every parameter with >= 2 dimensions), in ``named_parameters`` order."""
    return [n for n, p in model.named_parameters() if p.dim() >= 2]


def prune(model: nn.Module, masks: Masks, sparsity: float, names: Iterable[str]) -> Masks:
    """Level-prune each named tensor to ``sparsity`` (monotone masks) and zero pruned weights."""
    params = dict(model.named_parameters())
    out = {n: m.bool() for n, m in masks.items()}
    for name in names:
        out[name] = level_mask(params[name], sparsity, out.get(name))
    apply_masks(model, out)
    return out


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor],
                trainable_only: bool = False) -> None:
    """Zero the pruned entries of every masked parameter (``trainable_only``: of those that
    require grad; frozen ones cannot change), in place."""
    params = dict(model.named_parameters())
    for name, m in masks.items():
        if not trainable_only or params[name].requires_grad:
            params[name].mul_(m.to(params[name].dtype))


def mask_gradients(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the dense gradient of pruned entries (they take no part in back-propagation).

    Sparse gradients (an embedding's touched rows) are left alone: Adagrad then moves pruned
    entries of those rows, and ``apply_masks`` after the step puts them back to zero, so the
    weights are the same; only the optimiser's accumulator differs at pruned entries.
    """
    params = dict(model.named_parameters())
    for name, m in masks.items():
        g = params[name].grad
        if g is not None and not g.is_sparse:
            g.mul_(m.to(g.dtype))


def density(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Share of kept entries per masked tensor."""
    return {n: float(m.float().mean()) for n, m in masks.items()}
