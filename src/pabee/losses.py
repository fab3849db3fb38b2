"""Layer weightings and the joint loss of all internal classifiers, as pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_WEIGHTINGS = ("linear", "uniform", "last")


def layer_loss_weights(num_layers: int, weighting: str = "linear") -> torch.Tensor:
    """Weights (L,) that sum to 1 for the losses of classifiers 1..L.

    ``linear`` is PABEE's weighting: layer i gets i / sum(1..L), so deeper classifiers count more.
    ``uniform`` gives every layer 1 / L.
    ``last`` trains only the last classifier: plain fine-tuning, the baseline PABEE is compared with.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if weighting == "linear":
        raw = torch.arange(1, num_layers + 1, dtype=torch.float32)
    elif weighting == "uniform":
        raw = torch.ones(num_layers, dtype=torch.float32)
    elif weighting == "last":
        raw = torch.zeros(num_layers, dtype=torch.float32)
        raw[-1] = 1.0
    else:
        raise ValueError(f"unknown loss weighting {weighting!r}; choose one of {', '.join(LOSS_WEIGHTINGS)}")
    return raw / raw.sum()


def classifier_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One classifier's loss: cross-entropy for (batch, C>1) logits, mean squared error for (batch, 1)."""
    if logits.size(-1) == 1:
        return F.mse_loss(logits[:, 0].float(), labels.to(torch.float32).view(-1))
    return F.cross_entropy(logits.float(), labels.view(-1).long())


def weighted_layer_loss(all_logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_i w_i * L_i over the classifiers. all_logits (L, batch, C), labels (batch,), weights (L,) -> scalar."""
    losses = torch.stack([classifier_loss(layer_logits, labels) for layer_logits in all_logits])  # (L,)
    return (losses * weights.to(losses.device)).sum()
