"""The layer graphs' inputs besides the hidden states (export format 2), made once per batch in numpy and cut down
when rows leave the batch: the additive attention mask, the mean-pooling weights and MPNet's relative position
bias (an output of the embeddings graph). Format 1 exports take the plain 0/1 mask instead.

Each function gives the values the torch model computes for itself, value for value (``tests/test_onnx_inputs.py``).
"""

from __future__ import annotations

import numpy as np

HIDDEN = "hidden_states"
PER_ROW = ("attention_mask", "attention_bias", "pool_weights")  # (A, ..., S): one row per running row
PER_POSITION = ("position_bias",)  # (1, heads, S, S): depends only on the positions, shared by every row


def attention_bias(mask: np.ndarray) -> np.ndarray:
    """(B,S) 0/1 -> (B,1,1,S) float32: 0 where a key may be attended to, float32's minimum on padding (the additive
    mask of :func:`pabee.onnx.graphs.additive_mask`)."""
    keep = mask[:, None, None, :].astype(np.float32)
    return (np.float32(1.0) - keep) * np.finfo(np.float32).min


def pool_weights(mask: np.ndarray) -> np.ndarray:
    """(B,S) 0/1 -> (B,1,S) float32 mean-pooling weights: 1/n on a row's n unpadded positions, 0 on its padding
    (``PabeeForSequenceClassification._pool_input`` at inference)."""
    weights = mask.astype(np.float32)
    return (weights / np.maximum(weights.sum(1, keepdims=True), np.float32(1.0)))[:, None, :]


def first_feed(names, hidden: np.ndarray, mask: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> dict:
    """The inputs ``names`` of the layer graphs for a batch entering layer 1: hidden (B,S,H), mask (B,S) 0/1 int64,
    ``extra`` the embeddings graph's other outputs by name. ValueError when one cannot be made."""
    made = {HIDDEN: hidden, "attention_mask": mask, **(extra or {})}
    if "attention_bias" in names:
        made["attention_bias"] = attention_bias(mask)
    if "pool_weights" in names:
        made["pool_weights"] = pool_weights(mask)
    missing = [name for name in names if name not in made]
    if missing:
        raise ValueError(f"the layer graphs take {', '.join(missing)}, which the embeddings graph does not give")
    return {name: made[name] for name in names}


def cut_feed(feed: dict[str, np.ndarray], rows: np.ndarray, width: int) -> None:
    """Keep only ``rows`` (indices) and the first ``width`` positions of every input in ``feed``, in place (the
    hidden states are the caller's); each result is C-contiguous, made in one copy."""
    cut = slice(0, width)
    for name, value in feed.items():
        if name in PER_ROW:
            feed[name] = np.ascontiguousarray(value[rows, ..., cut])
        elif name in PER_POSITION:
            feed[name] = np.ascontiguousarray(value[..., cut, cut])
