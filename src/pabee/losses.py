"""Layer weightings and the joint loss of all internal classifiers (optionally with self-distillation from the
last classifier), as pure functions."""

from __future__ import annotations

import math
import numbers

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


# ---------------------------------------------------------------------------------------------- self-distillation

DEFAULT_DISTILLATION_TEMPERATURE = 2.0


def check_distillation(alpha: object, temperature: object) -> tuple[float, float]:
    """``(alpha, temperature)`` as floats, or ValueError: alpha must be in [0, 1] (0: off), temperature > 0."""
    for name, value in (("distillation_alpha", alpha), ("distillation_temperature", temperature)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"distillation_alpha must be in [0, 1] (0: no self-distillation), got {alpha!r}")
    if not float(temperature) > 0.0:
        raise ValueError(f"distillation_temperature must be > 0, got {temperature!r}")
    return float(alpha), float(temperature)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """How far one classifier is from the last one's predictions; no gradient reaches ``teacher``.

    student, teacher: (batch, C) logits -> scalar. Classification (C > 1): KL(softmax(teacher/T) ||
    softmax(student/T)) * T^2, averaged over the batch (the T^2 keeps the gradient's scale independent of T, as in
    Hinton et al. 2015). Regression (C == 1): mean squared error to the teacher's prediction.
    """
    teacher = teacher.detach().float()
    student = student.float()
    if student.size(-1) == 1:
        return F.mse_loss(student[:, 0], teacher[:, 0])
    log_p_student = F.log_softmax(student / temperature, dim=-1)  # (B,C)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=-1)  # (B,C)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * temperature**2


def distilled_layer_loss(
    all_logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    alpha: float = 0.0,
    temperature: float = DEFAULT_DISTILLATION_TEMPERATURE,
) -> torch.Tensor:
    """The joint loss with self-distillation: sum_i w_i * loss_i. all_logits (L, batch, C), labels (batch,),
    weights (L,) -> scalar.

    Every internal classifier i < L also learns the last classifier's softened predictions:
    loss_i = (1 - alpha) * L_i + alpha * KD_i, with L_i its own label loss (:func:`classifier_loss`) and KD_i
    :func:`distillation_loss` against the detached last-layer logits (temperature ``temperature``); the last
    classifier keeps its plain label loss (it is the teacher, and no gradient of a KD term reaches it). ``alpha`` 0
    is :func:`weighted_layer_loss` exactly.
    """
    alpha, temperature = check_distillation(alpha, temperature)
    if alpha == 0.0:
        return weighted_layer_loss(all_logits, labels, weights)
    teacher = all_logits[-1].detach()  # (B,C)
    last = all_logits.size(0) - 1
    losses = []
    for i, layer_logits in enumerate(all_logits):  # layer_logits (B,C)
        own = classifier_loss(layer_logits, labels)
        if i == last:
            losses.append(own)
        else:
            losses.append((1.0 - alpha) * own + alpha * distillation_loss(layer_logits, teacher, temperature))
    return (torch.stack(losses) * weights.to(all_logits.device)).sum()  # (L,) -> scalar
