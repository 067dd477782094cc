"""What a C3DRec device spends: FLOPs and memory of personal training and ranking.

Conventions (``fedrec.devices``): a dense [m, k] x [k, n] product costs 2 m n k FLOPs.
Pruned weights are assumed to run on sparse kernels, so a layer's FLOPs scale with its
density (share of kept weights; the source of AGP's training-time saving, Tables 3-4),
while memory holds the dense tensors (the paper measures the same memory with and
without AGP). Per next-click target:

* GRU step: ``3 gates x 2 x H x (E + H)`` forward; training = 3 x forward (forward, grads
  w.r.t. activations and weights);
* output layer over all items: ``2 x H x n_items`` forward; training = 2 x forward
  (gradients w.r.t. the user embedding; the weight gradient is needed only for the device's
  own item rows, which we neglect).

Ranking (pull) costs one GRU step per test click (the state is carried along) plus
``2 H`` per candidate. Memory: dense weights + gradient and Adagrad accumulator of the
trainable tensors (input item table, GRU, and the output table when the device fine-tunes
its own item rows) + activations of a mini-batch (inputs, GRU
gates and states, logits over all items) + the candidate embeddings (pull).
"""

from __future__ import annotations

from collections.abc import Mapping

BYTES = 4  # float32


def gru_step_flops(embedding_dim: int, hidden_dim: int) -> int:
    """Forward FLOPs of one GRU step: 3 gates, input and recurrent products."""
    return 3 * 2 * hidden_dim * (embedding_dim + hidden_dim)


def density_of(dens: Mapping[str, float], prefix: str) -> float:
    """Mean density of the tensors whose name starts with ``prefix`` (1.0 if none)."""
    vals = [v for n, v in dens.items() if n.startswith(prefix)]
    return sum(vals) / len(vals) if vals else 1.0


def train_flops(n_events: int, n_items: int, embedding_dim: int, hidden_dim: int,
                dens: Mapping[str, float]) -> float:
    """Personal training FLOPs for ``n_events`` targets (all epochs)."""
    gru = 3 * gru_step_flops(embedding_dim, hidden_dim) * density_of(dens, "gru.")
    out = 2 * 2 * hidden_dim * n_items * density_of(dens, "out.")
    return float(n_events) * (gru + out)


def rank_flops(n_events: int, n_scored: int, embedding_dim: int, hidden_dim: int,
               dens: Mapping[str, float]) -> float:
    """Ranking FLOPs: one GRU step per test click plus 2 H per scored item."""
    gru = gru_step_flops(embedding_dim, hidden_dim) * density_of(dens, "gru.")
    return float(n_events) * (gru + 2 * hidden_dim * n_scored)


def model_params(n_items: int, embedding_dim: int, hidden_dim: int) -> dict[str, int]:
    """Parameter counts of the GRU4Rec parts (one GRU layer, no output bias)."""
    gru = 3 * hidden_dim * (embedding_dim + hidden_dim) + 2 * 3 * hidden_dim
    return {"item_emb": n_items * embedding_dim, "gru": gru, "out": n_items * hidden_dim}


def train_memory_bytes(n_items: int, embedding_dim: int, hidden_dim: int, batch_events: int,
                       n_candidates: int = 0, train_items: bool = False) -> float:
    """Peak memory of personal training (module docstring); float32 throughout.
    ``train_items``: the output item table is trainable too (its own rows learn, but the
    gradient and Adagrad buffers are table-sized)."""
    p = model_params(n_items, embedding_dim, hidden_dim)
    weights = sum(p.values())
    trainable = p["item_emb"] + p["gru"] + (p["out"] if train_items else 0)
    act = batch_events * (embedding_dim + 4 * hidden_dim + n_items)
    return BYTES * (weights + 2 * trainable + act + n_candidates * hidden_dim)


def one_hot_model_params(n_items: int, hidden_dim: int) -> int:
    """Parameters without the item embedding layer (one-hot input, Table 3's "w/o item
    embedding"): the GRU reads the n_items-dimensional one-hot vector directly."""
    return 3 * hidden_dim * (n_items + hidden_dim) + 6 * hidden_dim + n_items * hidden_dim
