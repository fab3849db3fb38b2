"""Exit rules: a typed value (:class:`ExitRule`) and one small rule object per kind, over numpy arrays.

An :class:`ExitRule` names one rule and its setting (the ``"kind:value"`` strings of the CLI and the records):

* ``patience`` (PABEE, Zhou et al. 2020): after layer i, classifier i predicts; a counter counts how many layers
  in a row the prediction stayed the same as the previous layer's (classification: same argmax; regression:
  ``|difference| < regression_threshold``). The example exits when the counter reaches ``value``. 0 = full depth.
* ``entropy`` (DeeBERT): exit after layer i when the entropy of softmax(logits_i), in nats, is < ``value`` (>= 0).
* ``confidence`` (Shallow-Deep Networks, BranchyNet): exit when the largest softmax probability is >= ``value``,
  with 0 < ``value`` <= 1.
* ``layer`` (static truncation): every example runs ``value`` layers (>= 1; values >= L mean the last layer).

Entropy and confidence read class probabilities, so they exist only for classification (num_labels >= 2).
Under every rule an example that no layer lets out runs to the last layer and uses the last classifier.

``ExitRule.build()`` gives the rule object (:class:`PatienceRule`, :class:`EntropyRule`, :class:`ConfidenceRule`,
:class:`FixedLayerRule`), which decides layer by layer over a batch held as numpy arrays:

* ``start(batch) -> state``; ``step(state, logits (A,C), layer) -> (state, done (A,) bool)`` for the A rows still
  running, ``layer`` counting from 0; ``keep(state, rows (A,) bool) -> state`` for the rows that stay.
* ``static_depth(L)``: the depth every row runs when the rule needs no per-layer decision (fixed layer,
  patience 0), else None.
* ``exit_layers(all_logits (L,B,C)) -> (B,)``: the exit layer (1..L) of every row, recomputed from all layers'
  logits by running the very same early-exit loop (:func:`pabee.early_exit.run_early_exit`) over them.

Nothing here imports torch: the torch model and the ONNX runtime share this code.
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass

import numpy as np

DEFAULT_REGRESSION_THRESHOLD = 0.1


# ---------------------------------------------------------------------------------------------- argument checks


def check_patience(patience: object) -> int:
    """Return ``patience`` as an int, or raise if it is not a non-negative integer.

    Integer scalars of any library (numpy, a one-element integer torch tensor) are accepted; floats are not.
    """
    try:
        if isinstance(patience, bool):
            raise TypeError
        value = operator.index(patience)
    except TypeError:
        raise TypeError(f"patience must be a non-negative integer, got {patience!r}") from None
    if value < 0:
        raise ValueError(f"patience must be a non-negative integer, got {value}")
    return int(value)


def check_regression_threshold(threshold: object) -> float:
    """Return ``threshold`` as a float, or raise if it is not a finite number >= 0."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"regression_threshold must be a number >= 0, got {threshold!r}")
    value = float(threshold)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"regression_threshold must be a finite number >= 0, got {threshold}")
    return value


# ---------------------------------------------------------------------------------------------- per-layer tests


def _probability_dtype(logits: np.ndarray) -> np.dtype:
    return np.result_type(logits.dtype, np.float32)  # at least float32


def softmax_entropy(logits) -> np.ndarray:
    """Entropy in nats of softmax(logits) row by row: (batch, C) -> (batch,), computed in at least float32."""
    logits = np.asarray(logits)
    x = logits.astype(_probability_dtype(logits), copy=False)
    shifted = x - x.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    p = np.exp(log_p)
    return -np.where(p > 0, p * log_p, 0).sum(axis=-1)


def max_softmax_probability(logits) -> np.ndarray:
    """The largest class probability of softmax(logits) row by row: (batch, C) -> (batch,), at least float32."""
    logits = np.asarray(logits)
    x = logits.astype(_probability_dtype(logits), copy=False)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).max(axis=-1)


def entropy_reached(logits, threshold: float) -> np.ndarray:
    """(batch,) bool: rows whose prediction entropy is strictly below ``threshold`` (DeeBERT's exit test)."""
    entropy = softmax_entropy(logits)
    return entropy < entropy.dtype.type(threshold)


def confidence_reached(logits, threshold: float) -> np.ndarray:
    """(batch,) bool: rows whose largest class probability is at least ``threshold``."""
    confidence = max_softmax_probability(logits)
    return confidence >= confidence.dtype.type(threshold)


def predictions_agree(previous, current, regression_threshold: float) -> np.ndarray:
    """Whether two consecutive classifiers give the same prediction, row by row.

    previous, current: (batch, num_labels) logits. With one label (regression) two predictions agree when
    ``|previous - current| < regression_threshold`` (in the logits' precision); otherwise when their argmax is the
    same (the first maximum; NaN counts as the maximum, as in torch). Returns a (batch,) bool array.
    """
    previous, current = np.asarray(previous), np.asarray(current)
    if current.shape[-1] == 1:
        difference = np.abs(previous[:, 0] - current[:, 0])
        return difference < difference.dtype.type(regression_threshold)
    return previous.argmax(axis=-1) == current.argmax(axis=-1)


def next_patience_counter(counter: np.ndarray, agree: np.ndarray) -> np.ndarray:
    """Count consecutive agreements: +1 where the prediction held, back to 0 where it changed. (batch,) int64."""
    return np.where(agree, counter + 1, 0)


def patience_reached(counter: np.ndarray, patience: int) -> np.ndarray:
    """(batch,) bool: rows whose counter reached a positive patience. Patience 0 never exits early."""
    if patience == 0:
        return np.zeros(np.shape(counter), dtype=bool)
    return np.asarray(counter) >= patience


# ---------------------------------------------------------------------------------------------- rule objects


class StepRule:
    """The interface every rule object has; the defaults suit a rule that keeps no state between layers.

    A rule sees each layer's logits of the rows still running and says which of them leave; it knows nothing of
    models, tensors or backends. Subclasses set ``kind`` and implement ``step`` and ``check_value``.
    """

    kind = ""
    needs_probabilities = False  # True: classification only (num_labels >= 2)

    @staticmethod
    def check_value(value: float) -> float:
        """The rule's setting, normalised (int or float); ValueError if out of range."""
        raise NotImplementedError

    def start(self, batch: int) -> object:
        """The state before layer 1 for ``batch`` rows."""
        return None

    def step(self, state: object, logits: np.ndarray, layer: int) -> tuple[object, np.ndarray]:
        """Layer ``layer`` (0-based) gave ``logits`` (A,C) for the A running rows: (new state, done (A,) bool)."""
        raise NotImplementedError

    def keep(self, state: object, rows: np.ndarray) -> object:
        """The state of the rows that stay, ``rows`` being an (A,) bool mask over the running rows."""
        return state

    def static_depth(self, num_layers: int) -> int | None:
        """The depth every row runs when the rule needs no per-layer decision, else None."""
        return None

    def check_logits(self, logits: np.ndarray) -> None:
        """Raise ValueError when the logits (..., C) cannot feed this rule (probability rules on one column)."""
        if self.needs_probabilities and logits.shape[-1] < 2:
            raise ValueError(
                f"the {self.kind} exit rule needs class probabilities: it works only for classification, "
                "not for regression logits (one column)"
            )

    def exit_layers(self, all_logits) -> np.ndarray:
        """The exit layer (1..L) of every row, recomputed from all classifiers' logits (L, batch, C): (batch,) int64.

        Runs :func:`pabee.early_exit.run_early_exit` over the given logits, so the answer is by construction what
        the layer-by-layer inference decides from the same logits.
        """
        from .early_exit import replay_exit_layers

        all_logits = np.asarray(all_logits)
        self.check_logits(all_logits)
        return replay_exit_layers(self, all_logits)


class PatienceRule(StepRule):
    """PABEE: exit once ``patience`` consecutive classifiers agreed with their predecessor (0: never early).

    State: (the previous layer's logits (A,C) or None, the counters (A,) int64).
    """

    kind = "patience"

    def __init__(self, patience: int, regression_threshold: float = DEFAULT_REGRESSION_THRESHOLD):
        self.patience = check_patience(patience)
        self.regression_threshold = check_regression_threshold(regression_threshold)

    @staticmethod
    def check_value(value: float) -> int:
        return _integer_value("patience", value, 0)

    def start(self, batch: int) -> tuple[np.ndarray | None, np.ndarray]:
        return None, np.zeros(batch, dtype=np.int64)

    def step(self, state, logits, layer):
        previous, counter = state
        if previous is not None:
            counter = next_patience_counter(counter, predictions_agree(previous, logits, self.regression_threshold))
        return (logits, counter), patience_reached(counter, self.patience)

    def keep(self, state, rows):
        previous, counter = state
        return (None if previous is None else previous[rows]), counter[rows]

    def static_depth(self, num_layers: int) -> int | None:
        return num_layers if self.patience == 0 else None


class _ThresholdRule(StepRule):
    """A rule that tests each layer's logits on their own against ``threshold`` (no state)."""

    needs_probabilities = True

    def __init__(self, threshold: float, regression_threshold: float | None = None):
        self.threshold = self.check_value(threshold)

    def step(self, state, logits, layer):
        return state, self.reached(logits, self.threshold)

    @staticmethod
    def reached(logits: np.ndarray, threshold: float) -> np.ndarray:
        raise NotImplementedError


class EntropyRule(_ThresholdRule):
    """DeeBERT: exit at the first layer whose prediction entropy (nats) is < ``threshold``."""

    kind = "entropy"
    reached = staticmethod(entropy_reached)

    @staticmethod
    def check_value(value: float) -> float:
        value = float(value)
        if not value >= 0:
            raise ValueError(f"the entropy threshold must be >= 0, got {value!r}")
        return value


class ConfidenceRule(_ThresholdRule):
    """Exit at the first layer whose largest class probability is >= ``threshold``."""

    kind = "confidence"
    reached = staticmethod(confidence_reached)

    @staticmethod
    def check_value(value: float) -> float:
        value = float(value)
        if not 0 < value <= 1:
            raise ValueError(f"the confidence threshold must be in (0, 1], got {value!r}")
        return value


class FixedLayerRule(StepRule):
    """Static truncation: every row runs min(``layer``, L) layers and uses that layer's classifier."""

    kind = "layer"

    def __init__(self, layer: int, regression_threshold: float | None = None):
        self.layer = self.check_value(layer)

    @staticmethod
    def check_value(value: float) -> int:
        return _integer_value("layer", value, 1)

    def step(self, state, logits, layer):
        return state, np.full(len(logits), layer + 1 >= self.layer)

    def static_depth(self, num_layers: int) -> int | None:
        return min(self.layer, num_layers)


def _integer_value(kind: str, value: float, minimum: int) -> int:
    if not float(value).is_integer():
        raise ValueError(f"the {kind} value must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"the {kind} value must be an integer >= {minimum}, got {value}")
    return value


RULE_CLASSES: dict[str, type[StepRule]] = {
    cls.kind: cls for cls in (PatienceRule, EntropyRule, ConfidenceRule, FixedLayerRule)
}
EXIT_RULE_KINDS = tuple(RULE_CLASSES)
INTEGER_KINDS = ("patience", "layer")
CLASSIFICATION_ONLY_KINDS = tuple(kind for kind, cls in RULE_CLASSES.items() if cls.needs_probabilities)


# ---------------------------------------------------------------------------------------------- ExitRule


@dataclass(frozen=True)
class ExitRule:
    """One exit rule: ``kind`` (one of :data:`EXIT_RULE_KINDS`) and its ``value``.

    ``value`` is an int for "patience" (>= 0) and "layer" (>= 1), a float for "entropy" (>= 0) and "confidence"
    (in (0, 1]). Integral floats are accepted for the integer kinds (``ExitRule("layer", 2.0).value == 2``).
    An invalid kind or value raises ValueError. :meth:`build` gives the rule object that decides.
    """

    kind: str
    value: float

    def __post_init__(self) -> None:
        rule_class = RULE_CLASSES.get(self.kind) if isinstance(self.kind, str) else None
        if rule_class is None:
            raise ValueError(f"unknown exit rule {self.kind!r}; choose one of {', '.join(EXIT_RULE_KINDS)}")
        value = self.value
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"the {self.kind} value must be a finite number, got {value!r}")
        object.__setattr__(self, "value", rule_class.check_value(value))

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

    def build(self, regression_threshold: float = DEFAULT_REGRESSION_THRESHOLD) -> StepRule:
        """The rule object that decides under this rule. ``regression_threshold`` is read by patience only."""
        return RULE_CLASSES[self.kind](self.value, regression_threshold)

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
