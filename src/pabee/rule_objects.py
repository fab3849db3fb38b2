"""The rule objects: one small class per exit rule kind, deciding layer by layer over numpy arrays.

Every rule object has the :class:`StepRule` interface, which :func:`pabee.early_exit.run_early_exit` drives:

* ``start(batch) -> state``; ``step(state, logits (A,C), layer) -> (state, done (A,) bool)`` for the A rows still
  running, ``layer`` counting from 0; ``keep(state, rows (A,) bool) -> state`` for the rows that stay.
* ``static_depth(L)``: the depth every row runs when the rule needs no per-layer decision (fixed layer,
  patience 0), else None.
* ``exit_layers(all_logits (L,B,C)) -> (B,)``: the exit layer (1..L) of every row, recomputed from all layers'
  logits by running the very same early-exit loop over them.

:data:`RULE_CLASSES` maps each kind to its class; :class:`pabee.exit_rules.ExitRule` (the typed "kind:value")
builds them. Nothing here imports torch. Everything is also importable from :mod:`pabee.exit_rules`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .exit_signals import (
    DEFAULT_REGRESSION_THRESHOLD,
    check_patience,
    check_regression_threshold,
    confidence_reached,
    entropy_reached,
    next_patience_counter,
    patience_reached,
    predictions_agree,
)


class StepRule:
    """The interface every rule object has; the defaults suit a rule that keeps no state between layers.

    A rule sees each layer's logits of the rows still running and says which of them leave; it knows nothing of
    models, tensors or backends. Subclasses set ``kind`` and implement ``step`` and ``check_value``.
    """

    kind = ""
    needs_probabilities = False  # True: classification only (num_labels >= 2)
    second_setting: str | None = None  # the name of a second setting ("confidence threshold"), None: one setting

    @staticmethod
    def check_value(value: float) -> float:
        """The rule's setting, normalised (int or float); ValueError if out of range."""
        raise NotImplementedError

    @staticmethod
    def check_second(value: float) -> float:
        """The rule's second setting (rules with a ``second_setting`` only), normalised; ValueError if out of range."""
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


class _CounterRule(StepRule):
    """A rule that counts consecutive layers whose prediction passed ``advances`` (PABEE's counter) and lets a row
    out once the count reaches ``patience`` (0: never early).

    State: (the previous layer's logits (A,C) or None before layer 1, the counters (A,) int64).
    """

    patience = 0

    def advances(self, previous: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """(A,) bool: where the counter goes up after this layer (elsewhere it goes back to 0)."""
        raise NotImplementedError

    def start(self, batch: int) -> tuple[np.ndarray | None, np.ndarray]:
        return None, np.zeros(batch, dtype=np.int64)

    def step(self, state, logits, layer):
        previous, counter = state
        if previous is not None:
            counter = next_patience_counter(counter, self.advances(previous, logits))
        return (logits, counter), patience_reached(counter, self.patience)

    def keep(self, state, rows):
        previous, counter = state
        return (None if previous is None else previous[rows]), counter[rows]


class PatienceRule(_CounterRule):
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

    def advances(self, previous, logits):
        return predictions_agree(previous, logits, self.regression_threshold)

    def static_depth(self, num_layers: int) -> int | None:
        return num_layers if self.patience == 0 else None


def _non_negative_value(what: str, value: float) -> float:
    """A threshold >= 0 (NaN is not); ``what`` names it in the error."""
    value = float(value)
    if not value >= 0:
        raise ValueError(f"the {what} must be >= 0, got {value!r}")
    return value


def _probability_value(what: str, value: float) -> float:
    """A class-probability threshold in (0, 1] (NaN is outside); ``what`` names it in the error."""
    value = float(value)
    if not 0 < value <= 1:
        raise ValueError(f"the {what} must be in (0, 1], got {value!r}")
    return value


class _ThresholdRule(StepRule):
    """A rule that tests each layer's logits on their own against ``threshold`` (no state).

    Subclasses set ``kind``, ``reached`` (the test) and ``check_threshold`` (what, value) -> value, the range check
    of their threshold (ValueError naming ``what`` when it is out of range).
    """

    needs_probabilities = True
    check_threshold: Callable[[str, float], float]

    @classmethod
    def check_value(cls, value: float) -> float:
        return cls.check_threshold(f"{cls.kind} threshold", value)

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
    check_threshold = staticmethod(_non_negative_value)


class ConfidenceRule(_ThresholdRule):
    """Exit at the first layer whose largest class probability is >= ``threshold``."""

    kind = "confidence"
    reached = staticmethod(confidence_reached)
    check_threshold = staticmethod(_probability_value)


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


class HybridRule(_CounterRule):
    """Patience over confident predictions: the counter goes up after layer i only when classifier i agrees with
    classifier i-1 (same argmax) AND its largest class probability is >= ``confidence``; otherwise it goes back to
    0. A row exits once the counter reaches ``patience`` (>= 1). Classification only.

    Written ``hybrid:3@0.9`` (patience 3, confidence 0.9). With ``confidence`` at its smallest (any probability
    passes) it is PABEE's patience rule; a high ``confidence`` keeps rows whose layers agree on an unsure answer.
    """

    kind = "hybrid"
    needs_probabilities = True
    second_setting = "confidence threshold"

    def __init__(self, patience: int, confidence: float, regression_threshold: float | None = None):
        self.patience = self.check_value(patience)
        self.confidence = self.check_second(confidence)

    @staticmethod
    def check_value(value: float) -> int:
        return _integer_value("hybrid", value, 1)

    @staticmethod
    def check_second(value: float) -> float:
        return _probability_value("hybrid confidence threshold", value)

    def advances(self, previous, logits):
        return predictions_agree(previous, logits, 0.0) & confidence_reached(logits, self.confidence)


def _integer_value(kind: str, value: float, minimum: int) -> int:
    if not float(value).is_integer():
        raise ValueError(f"the {kind} value must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"the {kind} value must be an integer >= {minimum}, got {value}")
    return value


RULE_CLASSES: dict[str, type[StepRule]] = {
    cls.kind: cls for cls in (PatienceRule, EntropyRule, ConfidenceRule, FixedLayerRule, HybridRule)
}
EXIT_RULE_KINDS = tuple(RULE_CLASSES)
INTEGER_KINDS = ("patience", "layer", "hybrid")  # kinds whose (first) value is an integer
CLASSIFICATION_ONLY_KINDS = tuple(kind for kind, cls in RULE_CLASSES.items() if cls.needs_probabilities)
