"""Small pure helpers shared by the model files: seeded init, history embedding, losses, chunking.

Nothing here holds state; every function takes tensors (or a module) and returns tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from fedrec.errors import ConfigError
from fedrec.models.base import PAD, Batch

# Elements of the largest intermediate tensor one score_all chunk may allocate (~16 MiB float32).
CHUNK_ELEMENTS: int = 1 << 22


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block under ``torch.manual_seed(seed)`` without touching the caller's RNG state.

    ``seed=None`` leaves the global generator alone, so construction is still deterministic
    under an outer ``torch.manual_seed``.
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        # CPU generator only: torch.manual_seed also queues lazy CUDA/XPU/MTIA seeding,
        # which formats a stack trace per call (~1.5 ms) and dominated per-device init.
        torch.default_generator.manual_seed(seed)
        yield


def require(batch: Batch, field: str, model: str, hint: str) -> torch.Tensor:
    """Return ``getattr(batch, field)`` or raise one clear line saying how to build the batch."""
    value = getattr(batch, field)
    if value is None:
        raise ConfigError(f"{model} needs batch.{field}; {hint}")
    return value


def embed_history(table: nn.Embedding, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed a left-padded history, mapping PAD to the zero vector.

    Parameters
    ----------
    table : nn.Embedding
        Item table ``[n_items, D]`` (no extra PAD row: the shared payload stays ``n_items`` rows).
    history : LongTensor [B, L]
        Item ids, PAD = -1 on the left.

    Returns
    -------
    emb : FloatTensor [B, L, D]
        Zero at PAD positions.
    mask : BoolTensor [B, L]
        True where an item is present.
    """
    mask = history != PAD  # [B, L]
    emb = table(history.clamp(min=0)) * mask.unsqueeze(-1)  # [B, L, D]
    return emb, mask


def bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of logits ``[B]`` against 0/1 labels ``[B]``."""
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking loss (Rendle et al., UAI 2009).

    ``-mean(log sigmoid(pos - neg))`` with ``pos`` [B] scores of positives and ``neg`` [B, N]
    scores of sampled negatives; every (positive, negative) pair counts once.
    """
    return -F.logsigmoid(pos.unsqueeze(1) - neg).mean()


def sampled_softmax_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the positive in column 0 of ``logits`` [B, 1 + N]."""
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def chunk_size(rows: int, per_item: int, budget: int = CHUNK_ELEMENTS) -> int:
    """Items per chunk so that ``rows * chunk * per_item`` stays within ``budget`` elements."""
    return max(1, budget // max(1, rows * per_item))


def score_in_chunks(
    fn: Callable[[torch.Tensor], torch.Tensor], n_items: int, chunk: int, device: torch.device
) -> torch.Tensor:
    """Concatenate ``fn(item_ids[C]) -> [B, C]`` over consecutive item chunks -> [B, n_items]."""
    ids = torch.arange(n_items, device=device)
    return torch.cat([fn(ids[s : s + chunk]) for s in range(0, n_items, chunk)], dim=1)


def mlp(sizes: tuple[int, ...], activation: Callable[[], nn.Module]) -> nn.Sequential:
    """``Linear -> activation`` for each consecutive pair of ``sizes`` (empty if one size)."""
    layers: list[nn.Module] = []
    for d_in, d_out in pairwise(sizes):
        layers += [nn.Linear(d_in, d_out), activation()]
    return nn.Sequential(*layers)


def linear_at(seq: nn.Sequential, index: int) -> nn.Linear:
    """``seq[index]``, a Linear layer (indexing a Sequential is typed as any Module)."""
    layer = seq[index]
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"layer {index} of {seq} is a {type(layer).__name__}, not a Linear")
    return layer


def prefixed_names(module: nn.Module, prefixes: tuple[str, ...], model: str) -> frozenset[str]:
    """Parameter names starting with any of ``prefixes``; each prefix must match something."""
    names = [n for n, _ in module.named_parameters()]
    for p in prefixes:
        if not any(n.startswith(p) for n in names):
            raise ConfigError(
                f"{model}: private prefix {p!r} matches no parameter; valid names: {names}"
            )
    return frozenset(n for n in names if n.startswith(prefixes)) if prefixes else frozenset()


def check_positive(model: str, **sizes: int) -> None:
    """Raise ConfigError naming the first size that is not a positive integer."""
    for name, value in sizes.items():
        if int(value) != value or value < 1:
            raise ConfigError(f"{model}: {name} must be a positive integer, got {value!r}")
