"""Exit rules as small pure tensor functions.

PABEE's rule (Zhou et al., 2020): after layer i, classifier i predicts. A counter counts how many layers in a row the
prediction stayed the same as the previous layer's (classification: same argmax; regression: absolute difference
below a threshold). When the counter reaches the patience, the example exits with that layer's prediction.
Patience 0 means no early exit: full depth, last classifier.

Every function here works on whole batches and keeps no state, so the same code serves the layer-by-layer
inference loop and the offline recomputation from all layers' logits.
"""

from __future__ import annotations

import math
import numbers

import torch

DEFAULT_REGRESSION_THRESHOLD = 0.1


def check_patience(patience: object) -> int:
    """Return ``patience`` as an int, or raise if it is not a non-negative integer."""
    if isinstance(patience, bool) or not isinstance(patience, numbers.Integral):
        if isinstance(patience, torch.Tensor) and patience.numel() == 1 and not patience.is_floating_point():
            patience = int(patience.item())
        else:
            raise TypeError(f"patience must be a non-negative integer, got {patience!r}")
    if patience < 0:
        raise ValueError(f"patience must be a non-negative integer, got {patience}")
    return int(patience)


def check_regression_threshold(threshold: object) -> float:
    """Return ``threshold`` as a float, or raise if it is not a finite number >= 0."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"regression_threshold must be a number >= 0, got {threshold!r}")
    value = float(threshold)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"regression_threshold must be a finite number >= 0, got {threshold}")
    return value


def predictions_agree(previous: torch.Tensor, current: torch.Tensor, regression_threshold: float) -> torch.Tensor:
    """Whether two consecutive classifiers give the same prediction, row by row.

    previous, current: (batch, num_labels) logits. With one label (regression) two predictions agree when
    ``|previous - current| < regression_threshold``; otherwise when their argmax is the same.
    Returns a (batch,) bool tensor.
    """
    if current.size(-1) == 1:
        return (previous[:, 0] - current[:, 0]).abs() < regression_threshold
    return previous.argmax(dim=-1) == current.argmax(dim=-1)


def next_patience_counter(counter: torch.Tensor, agree: torch.Tensor) -> torch.Tensor:
    """Count consecutive agreements: +1 where the prediction held, back to 0 where it changed. (batch,) long."""
    return torch.where(agree, counter + 1, torch.zeros_like(counter))


def patience_reached(counter: torch.Tensor, patience: int) -> torch.Tensor:
    """(batch,) bool: rows whose counter reached a positive patience. Patience 0 never exits early."""
    if patience == 0:
        return torch.zeros_like(counter, dtype=torch.bool)
    return counter >= patience


def patience_exit_layers(all_logits: torch.Tensor, patience: int, regression_threshold: float) -> torch.Tensor:
    """The exit layer (1..L) of every row, recomputed from all classifiers' logits.

    all_logits: (L, batch, num_labels). Returns (batch,) long: the first layer i at which the patience counter
    reaches ``patience``, or L when it never does (or patience is 0).
    """
    num_layers, batch = all_logits.shape[:2]
    exit_layers = torch.full((batch,), num_layers, dtype=torch.long, device=all_logits.device)
    if patience == 0:
        return exit_layers
    exited = torch.zeros(batch, dtype=torch.bool, device=all_logits.device)
    counter = torch.zeros(batch, dtype=torch.long, device=all_logits.device)
    for i in range(1, num_layers - 1):  # the last layer is the exit anyway
        agree = predictions_agree(all_logits[i - 1], all_logits[i], regression_threshold)
        counter = next_patience_counter(counter, agree)
        newly = patience_reached(counter, patience) & ~exited
        exit_layers[newly] = i + 1
        exited |= newly
    return exit_layers


def gather_exit_logits(all_logits: torch.Tensor, exit_layers: torch.Tensor) -> torch.Tensor:
    """Pick each row's logits at its exit layer. all_logits (L, batch, C), exit_layers (batch,) in 1..L -> (batch, C)."""
    rows = torch.arange(all_logits.size(1), device=all_logits.device)
    return all_logits[exit_layers - 1, rows]
