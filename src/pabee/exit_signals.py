"""What the exit rules read from one layer's logits, and the checks of their settings, over numpy arrays.

* :func:`softmax_entropy`, :func:`max_softmax_probability` (at least float32) and the tests built on them,
  :func:`entropy_reached` and :func:`confidence_reached`: (batch, C) logits -> (batch,) values or bools.
* :func:`predictions_agree` (same argmax, or regression predictions closer than a threshold),
  :func:`next_patience_counter` and :func:`patience_reached`: PABEE's counter of consecutive agreements.
* :func:`check_patience` and :func:`check_regression_threshold`: the settings every front end checks.

The rule objects (:mod:`pabee.rule_objects`) are made of these. Nothing here imports torch. Everything is also
importable from :mod:`pabee.exit_rules`, its first home.
"""

from __future__ import annotations

import math
import numbers
import operator

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
