"""Exit rules: a typed value (:class:`ExitRule`), its ``"kind:value"`` spelling, and the rule object it builds.

An :class:`ExitRule` names one rule and its setting (the ``"kind:value"`` strings of the CLI and the records):

* ``patience`` (PABEE, Zhou et al. 2020): after layer i, classifier i predicts; a counter counts how many layers
  in a row the prediction stayed the same as the previous layer's (classification: same argmax; regression:
  ``|difference| < regression_threshold``). The example exits when the counter reaches ``value``. 0 = full depth.
* ``entropy`` (DeeBERT): exit after layer i when the entropy of softmax(logits_i), in nats, is < ``value`` (>= 0).
* ``confidence`` (Shallow-Deep Networks, BranchyNet): exit when the largest softmax probability is >= ``value``,
  with 0 < ``value`` <= 1.
* ``layer`` (static truncation): every example runs ``value`` layers (>= 1; values >= L mean the last layer).
* ``hybrid`` (patience over confident predictions), two settings, written ``hybrid:3@0.9``: the patience counter
  goes up only when the prediction agrees with the previous layer's AND its top probability is >= the confidence
  threshold (``threshold``, in (0, 1]), else it goes back to 0; exit when it reaches ``value`` (>= 1).

Entropy, confidence and hybrid read class probabilities, so they exist only for classification (num_labels >= 2).
Under every rule an example that no layer lets out runs to the last layer and uses the last classifier.

``ExitRule.build()`` gives the rule object (:mod:`pabee.rule_objects`: :class:`PatienceRule`, :class:`EntropyRule`,
:class:`ConfidenceRule`, :class:`FixedLayerRule`, :class:`HybridRule`), which decides layer by layer over a batch
held as numpy arrays (``start`` / ``step`` / ``keep`` / ``static_depth``; ``exit_layers`` recomputes the exits from
all layers' logits with the same loop). The per-layer tests they are made of live in :mod:`pabee.exit_signals`;
every name of both modules stays importable from here.

Nothing here imports torch: the torch model and the ONNX runtime share this code.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .exit_signals import (  # noqa: F401  (re-exported: this module was their first home)
    DEFAULT_REGRESSION_THRESHOLD,
    check_patience,
    check_regression_threshold,
    confidence_reached,
    entropy_reached,
    max_softmax_probability,
    next_patience_counter,
    patience_reached,
    predictions_agree,
    softmax_entropy,
)
from .rule_objects import (  # noqa: F401  (re-exported: this module was their first home)
    CLASSIFICATION_ONLY_KINDS,
    EXIT_RULE_KINDS,
    INTEGER_KINDS,
    RULE_CLASSES,
    ConfidenceRule,
    EntropyRule,
    FixedLayerRule,
    HybridRule,
    PatienceRule,
    StepRule,
)

SECOND_SEPARATOR = "@"  # "hybrid:3@0.9": the value, then the second setting of a two-setting rule


# ---------------------------------------------------------------------------------------------- ExitRule


@dataclass(frozen=True)
class ExitRule:
    """One exit rule: ``kind`` (one of :data:`EXIT_RULE_KINDS`), its ``value`` and, for the two-setting "hybrid"
    rule only, its ``threshold`` (the confidence threshold; None for every other kind).

    ``value`` is an int for "patience" (>= 0), "layer" (>= 1) and "hybrid" (>= 1), a float for "entropy" (>= 0) and
    "confidence" (in (0, 1]). Integral floats are accepted for the integer kinds (``ExitRule("layer", 2.0).value ==
    2``). ``ExitRule("hybrid", 3, 0.9)`` is written ``hybrid:3@0.9``. An invalid kind, value or threshold (missing
    for hybrid, given for another kind) raises ValueError. :meth:`build` gives the rule object that decides.
    """

    kind: str
    value: float
    threshold: float | None = None

    def __post_init__(self) -> None:
        rule_class = RULE_CLASSES.get(self.kind) if isinstance(self.kind, str) else None
        if rule_class is None:
            raise ValueError(f"unknown exit rule {self.kind!r}; choose one of {', '.join(EXIT_RULE_KINDS)}")
        object.__setattr__(self, "value", rule_class.check_value(_finite(self.kind, "value", self.value)))
        second = rule_class.second_setting
        if second is None:
            if self.threshold is not None:
                raise ValueError(f"the {self.kind} exit rule has one setting, got a second one ({self.threshold!r})")
            return
        if self.threshold is None:
            raise ValueError(f"the {self.kind} exit rule needs a {second} too: write it "
                             f"'{self.kind}:{_format_value(self.value)}{SECOND_SEPARATOR}0.9' "
                             f"(ExitRule({self.kind!r}, {_format_value(self.value)}, 0.9))")
        threshold = _finite(self.kind, second, self.threshold)
        object.__setattr__(self, "threshold", rule_class.check_second(threshold))

    @classmethod
    def parse(cls, text: str) -> ExitRule:
        """``"entropy:0.3"`` -> ``ExitRule("entropy", 0.3)``; ``"patience:3"`` -> ``ExitRule("patience", 3)``;
        ``"hybrid:3@0.9"`` -> ``ExitRule("hybrid", 3, 0.9)``."""
        if not isinstance(text, str):
            raise TypeError(f"an exit rule is written as a string 'kind:value', got {text!r}")
        kind, sep, raw = text.partition(":")
        if not sep:
            raise ValueError(f"an exit rule is written 'kind:value' (e.g. 'entropy:0.3'), got {text!r}")
        raw_value, at, raw_second = raw.partition(SECOND_SEPARATOR)
        value = parse_number(raw_value, text)
        return cls(kind.strip().lower(), value, parse_number(raw_second, text) if at else None)

    def build(self, regression_threshold: float = DEFAULT_REGRESSION_THRESHOLD) -> StepRule:
        """The rule object that decides under this rule. ``regression_threshold`` is read by patience only."""
        rule_class = RULE_CLASSES[self.kind]
        if rule_class.second_setting is None:
            return rule_class(self.value, regression_threshold)
        return rule_class(self.value, self.threshold, regression_threshold)

    @property
    def label(self) -> str:
        """Human-readable name for tables and plots: "patience 3", "entropy 0.3", "layer 2", "hybrid 3@0.9"."""
        return f"{self.kind} {self._settings()}"

    @property
    def is_full_depth(self) -> bool:
        """True for patience 0, the full-depth baseline (every example runs every layer, last classifier)."""
        return self.kind == "patience" and self.value == 0

    def _settings(self) -> str:
        second = "" if self.threshold is None else f"{SECOND_SEPARATOR}{_format_value(self.threshold)}"
        return f"{_format_value(self.value)}{second}"

    def __str__(self) -> str:  # the inverse of parse
        return f"{self.kind}:{self._settings()}"


def parse_number(raw: str, text: str = "") -> int | float:
    """``"3"`` -> 3, ``"0.9"`` -> 0.9 (integers stay ints); ValueError naming the rule ``text`` otherwise."""
    raw = raw.strip()
    try:
        return int(raw)
    except ValueError:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"the value of exit rule {text or raw!r} is not a number") from None


def _finite(kind: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"the {kind} {name} must be a finite number, got {value!r}")
    return value


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
    if RULE_CLASSES[rule.kind].needs_probabilities and num_labels < 2:
        raise ValueError(
            f"the {rule.kind} exit rule needs class probabilities: it works only for classification, "
            f"not for a regression model (num_labels == {num_labels})"
        )


def rule_exit_layers(
    all_logits, rule: ExitRule | str, regression_threshold: float = DEFAULT_REGRESSION_THRESHOLD
) -> np.ndarray:
    """The exit layer (1..L) of every row under ``rule``, recomputed from all classifiers' logits (L, batch, C).

    Returns (batch,) int64. This is the reference the layer-by-layer inference reproduces; ``regression_threshold``
    is used only by the patience rule on regression models.
    """
    return to_exit_rule(rule).build(regression_threshold).exit_layers(all_logits)


def resolve_exit_rule(
    exit_rule: ExitRule | str | None, patience: int | None, default_patience: int, num_labels: int
) -> ExitRule:
    """The rule a model call asks for: ``exit_rule`` if given, else patience ``patience`` (default:
    ``default_patience``, the one saved with the model). Giving both is a ValueError, and so is a rule that needs
    class probabilities on a regression model. Shared by the torch model and the ONNX runtime."""
    if exit_rule is None:
        return patience_rule(check_patience(default_patience if patience is None else patience))
    if patience is not None:
        raise ValueError("give either exit_rule or patience, not both (patience p is exit_rule='patience:p')")
    rule = to_exit_rule(exit_rule)
    check_rule_supported(rule, num_labels)
    return rule
