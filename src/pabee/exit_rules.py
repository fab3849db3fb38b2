"""Exit rules beside patience, as a typed value and small pure tensor functions.

An :class:`ExitRule` names one rule and its setting:

* ``patience`` (PABEE, Zhou et al. 2020): exit once ``value`` consecutive classifiers agreed (0 = full depth).
  The per-layer functions are in :mod:`pabee.policy`.
* ``entropy`` (DeeBERT): exit after layer i when the entropy of softmax(logits_i), in nats, is < ``value`` (>= 0).
* ``confidence`` (Shallow-Deep Networks, BranchyNet): exit when the largest softmax probability is >= ``value``,
  with 0 < ``value`` <= 1.
* ``layer`` (static truncation): every example runs ``value`` layers (>= 1; values >= L mean the last layer).

Entropy and confidence read class probabilities, so they exist only for classification (num_labels >= 2).
Under every rule an example that no layer lets out runs to the last layer and uses the last classifier.

Like :mod:`pabee.policy`, every function works on whole batches and keeps no state: the same code serves the
layer-by-layer inference loop and :func:`rule_exit_layers`, the reference recomputation from all layers' logits.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from .policy import DEFAULT_REGRESSION_THRESHOLD, patience_exit_layers

EXIT_RULE_KINDS = ("patience", "entropy", "confidence", "layer")
INTEGER_KINDS = ("patience", "layer")
CLASSIFICATION_ONLY_KINDS = ("entropy", "confidence")


@dataclass(frozen=True)
class ExitRule:
    """One exit rule: ``kind`` (one of :data:`EXIT_RULE_KINDS`) and its ``value``.

    ``value`` is an int for "patience" (>= 0) and "layer" (>= 1), a float for "entropy" (>= 0) and "confidence"
    (in (0, 1]). Integral floats are accepted for the integer kinds (``ExitRule("layer", 2.0).value == 2``).
    An invalid kind or value raises ValueError.
    """

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in EXIT_RULE_KINDS:
            raise ValueError(f"unknown exit rule {self.kind!r}; choose one of {', '.join(EXIT_RULE_KINDS)}")
        value = self.value
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"the {self.kind} value must be a finite number, got {value!r}")
        if self.kind in INTEGER_KINDS:
            if not float(value).is_integer():
                raise ValueError(f"the {self.kind} value must be an integer, got {value!r}")
            value = int(value)
            minimum = 0 if self.kind == "patience" else 1
            if value < minimum:
                raise ValueError(f"the {self.kind} value must be an integer >= {minimum}, got {value}")
        else:
            value = float(value)
            if self.kind == "entropy" and not value >= 0:
                raise ValueError(f"the entropy threshold must be >= 0, got {value!r}")
            if self.kind == "confidence" and not 0 < value <= 1:
                raise ValueError(f"the confidence threshold must be in (0, 1], got {value!r}")
        object.__setattr__(self, "value", value)

    @classmethod
    def parse(cls, text: str) -> ExitRule:
        """``"entropy:0.3"`` -> ``ExitRule("entropy", 0.3)``; ``"patience:3"`` -> ``ExitRule("patience", 3)``."""
        if not isinstance(text, str):
            raise TypeError(f"an exit rule is written as a string 'kind:value', got {text!r}")
        kind, sep, raw = text.partition(":")
        if not sep:
            raise ValueError(f"an exit rule is written 'kind:value' (e.g. 'entropy:0.3'), got {text!r}")
        kind, raw = kind.strip().lower(), raw.strip()
        try:
            value = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"the value of exit rule {text!r} is not a number") from None
        return cls(kind, value)

    @property
    def label(self) -> str:
        """Human-readable name for tables and plots: "patience 3", "entropy 0.3", "layer 2"."""
        return f"{self.kind} {_format_value(self.value)}"

    @property
    def is_full_depth(self) -> bool:
        """True for patience 0, the full-depth baseline (every example runs every layer, last classifier)."""
        return self.kind == "patience" and self.value == 0

    def __str__(self) -> str:  # the inverse of parse
        return f"{self.kind}:{_format_value(self.value)}"


def _format_value(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


_PATIENCE_RULES = tuple(ExitRule("patience", p) for p in range(33))  # built once: forward() asks for one per call


def patience_rule(patience: int) -> ExitRule:
    """``ExitRule("patience", patience)``, without re-validating the common small patiences on every call."""
    if 0 <= patience < len(_PATIENCE_RULES):
        return _PATIENCE_RULES[patience]
    return ExitRule("patience", patience)


def to_exit_rule(rule: ExitRule | str) -> ExitRule:
    """An :class:`ExitRule` as given, or parsed from ``"kind:value"``."""
    if isinstance(rule, ExitRule):
        return rule
    if isinstance(rule, str):
        return ExitRule.parse(rule)
    raise TypeError(f"exit_rule must be an ExitRule or a 'kind:value' string, got {rule!r}")


def check_rule_supported(rule: ExitRule, num_labels: int) -> None:
    """Raise ValueError when ``rule`` needs class probabilities and the model is a regression (one label)."""
    if rule.kind in CLASSIFICATION_ONLY_KINDS and num_labels < 2:
        raise ValueError(
            f"the {rule.kind} exit rule needs class probabilities: it works only for classification, "
            f"not for a regression model (num_labels == {num_labels})"
        )


# ---------------------------------------------------------------------------------------------- per-layer tests


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) row by row: (batch, C) -> (batch,), computed in at least float32."""
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    log_p = torch.log_softmax(logits, dim=-1)
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(dim=-1)


def max_softmax_probability(logits: torch.Tensor) -> torch.Tensor:
    """The largest class probability of softmax(logits) row by row: (batch, C) -> (batch,)."""
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    return torch.softmax(logits, dim=-1).amax(dim=-1)


def entropy_reached(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """(batch,) bool: rows whose prediction entropy is strictly below ``threshold`` (DeeBERT's exit test)."""
    return softmax_entropy(logits) < threshold


def confidence_reached(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """(batch,) bool: rows whose largest class probability is at least ``threshold``."""
    return max_softmax_probability(logits) >= threshold


THRESHOLD_TESTS = {"entropy": entropy_reached, "confidence": confidence_reached}


# ---------------------------------------------------------------------------------------------- all layers at once


def first_exit_layers(reached: torch.Tensor) -> torch.Tensor:
    """(L, batch) bool "this layer lets the row out" -> (batch,) long: the first such layer (1..L), else L."""
    reached = reached.clone()
    reached[-1] = True  # the last layer is the exit anyway
    return reached.to(torch.uint8).argmax(dim=0) + 1  # argmax returns the first maximal index


def entropy_exit_layers(all_logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """all_logits (L, batch, C) -> (batch,): first layer whose entropy is < ``threshold``, else L."""
    _check_classification(all_logits, "entropy")
    return first_exit_layers(entropy_reached(all_logits, threshold))


def confidence_exit_layers(all_logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """all_logits (L, batch, C) -> (batch,): first layer whose max probability is >= ``threshold``, else L."""
    _check_classification(all_logits, "confidence")
    return first_exit_layers(confidence_reached(all_logits, threshold))


def fixed_exit_layers(all_logits: torch.Tensor, layer: int) -> torch.Tensor:
    """all_logits (L, batch, C) -> (batch,) filled with min(``layer``, L)."""
    num_layers, batch = all_logits.shape[:2]
    return torch.full((batch,), min(layer, num_layers), dtype=torch.long, device=all_logits.device)


def rule_exit_layers(
    all_logits: torch.Tensor, rule: ExitRule, regression_threshold: float = DEFAULT_REGRESSION_THRESHOLD
) -> torch.Tensor:
    """The exit layer (1..L) of every row under ``rule``, recomputed from all classifiers' logits (L, batch, C).

    This is the reference the layer-by-layer inference must reproduce. ``regression_threshold`` is used only by
    the patience rule on regression models.
    """
    if rule.kind == "patience":
        return patience_exit_layers(all_logits, rule.value, regression_threshold)
    if rule.kind == "layer":
        return fixed_exit_layers(all_logits, rule.value)
    if rule.kind == "entropy":
        return entropy_exit_layers(all_logits, rule.value)
    return confidence_exit_layers(all_logits, rule.value)


def _check_classification(all_logits: torch.Tensor, kind: str) -> None:
    if all_logits.size(-1) < 2:
        raise ValueError(
            f"the {kind} exit rule needs class probabilities: it works only for classification, "
            "not for regression logits (one column)"
        )
