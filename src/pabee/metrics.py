"""GLUE metrics as small numpy functions (no scipy / sklearn).

Every function takes two 1-D sequences of the same, non-zero length and returns a Python float.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pabee.tasks import TaskSpec


def _pair(a: Any, b: Any, names: tuple[str, str] = ("preds", "labels")) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a)
    y = np.asarray(b)
    for arr, name in ((x, names[0]), (y, names[1])):
        if arr.ndim != 1:
            hint = " (take the argmax over the last axis first)" if arr.ndim == 2 else ""
            raise ValueError(f"{name} must be 1-D, got shape {arr.shape}{hint}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{names[0]} and {names[1]} differ in length: {x.shape[0]} vs {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError(f"{names[0]} and {names[1]} are empty")
    return x, y


def _float_pair(a: Any, b: Any, names: tuple[str, str] = ("x", "y")) -> tuple[np.ndarray, np.ndarray]:
    x, y = _pair(a, b, names)
    try:
        x = x.astype(np.float64)
        y = y.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{names[0]} and {names[1]} must be numeric: {err}") from None
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"{names[0]} and {names[1]} must be finite (found NaN or inf)")
    return x, y


def accuracy(preds: Sequence[Any], labels: Sequence[Any]) -> float:
    """Fraction of positions where ``preds`` equals ``labels``."""
    p, y = _pair(preds, labels)
    return float(np.mean(p == y))


def f1_binary(preds: Sequence[Any], labels: Sequence[Any], positive: Any = 1) -> float:
    """F1 score of the ``positive`` class: 2·TP / (2·TP + FP + FN).

    Returns 0.0 when there are no true positives (including when nothing is predicted or labelled positive).
    """
    p, y = _pair(preds, labels)
    pred_pos = p == positive
    true_pos = y == positive
    tp = int(np.sum(pred_pos & true_pos))
    fp = int(np.sum(pred_pos & ~true_pos))
    fn = int(np.sum(~pred_pos & true_pos))
    if tp == 0:
        return 0.0
    return float(2 * tp / (2 * tp + fp + fn))


def matthews_corrcoef(preds: Sequence[Any], labels: Sequence[Any]) -> float:
    """Matthews correlation coefficient; 0.0 when the denominator is 0 (e.g. a constant prediction).

    Computed from the confusion matrix, so any two label values work (and more than two give the
    multi-class generalisation); for 0/1 labels this is (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)).
    """
    p, y = _pair(preds, labels)
    classes, codes = np.unique(np.concatenate([y, p]), return_inverse=True)
    codes = codes.reshape(-1)
    n = y.shape[0]
    k = classes.shape[0]
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (codes[:n], codes[n:]), 1.0)
    true_counts = confusion.sum(axis=1)
    pred_counts = confusion.sum(axis=0)
    correct = float(np.trace(confusion))
    samples = float(n)
    cov_yp = correct * samples - float(true_counts @ pred_counts)
    cov_pp = samples * samples - float(pred_counts @ pred_counts)
    cov_yy = samples * samples - float(true_counts @ true_counts)
    denom = cov_pp * cov_yy
    if denom <= 0.0:
        return 0.0
    return float(cov_yp / np.sqrt(denom))


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of ``x`` and ``y``; 0.0 when either is constant (the correlation is undefined)."""
    a, b = _float_pair(x, y)
    a = a - a.mean()
    b = b - b.mean()
    denom = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    if denom == 0.0:
        return 0.0
    r = float(np.dot(a, b)) / denom
    return float(min(1.0, max(-1.0, r)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values get the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts).astype(np.float64)  # last 1-based rank of each group
    starts = ends - counts + 1.0  # first 1-based rank of each group
    return ((starts + ends) / 2.0)[inverse.reshape(-1)]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson correlation of the average ranks (ties share their mean rank)."""
    a, b = _float_pair(x, y)
    return pearson(_average_ranks(a), _average_ranks(b))


def _label_ids(task: TaskSpec, values: Sequence[Any], name: str) -> np.ndarray:
    """Map label strings to ids for classification tasks; leave ids as they are."""
    arr = np.asarray(values)
    if arr.ndim == 1 and arr.dtype.kind in "USO" and task.label_list is not None:
        index = {label: i for i, label in enumerate(task.label_list)}
        try:
            return np.asarray([index[str(v)] if isinstance(v, str) else int(v) for v in arr.tolist()])
        except KeyError as err:
            raise ValueError(
                f"{name}: label {err.args[0]!r} is not one of {list(task.label_list)} for task {task.name}"
            ) from None
    return arr


def compute_metrics(task: TaskSpec, preds: Sequence[Any], labels: Sequence[Any]) -> dict[str, float]:
    """Compute exactly the task's ``metric_names`` and return them as ``{name: float}``.

    For classification, ``preds`` and ``labels`` are label ids (label strings are accepted too and mapped
    through ``task.label_list``); F1 treats id 1 as the positive class. For regression they are floats.
    """
    if task.is_regression:
        p, y = _float_pair(preds, labels, ("preds", "labels"))
    else:
        p, y = _pair(_label_ids(task, preds, "preds"), _label_ids(task, labels, "labels"))
    functions = {
        "acc": lambda: accuracy(p, y),
        "f1": lambda: f1_binary(p, y, positive=1),
        "mcc": lambda: matthews_corrcoef(p, y),
        "pearson": lambda: pearson(p, y),
        "spearmanr": lambda: spearman(p, y),
    }
    result: dict[str, float] = {}
    for metric in task.metric_names:
        if metric not in functions:
            raise ValueError(f"unknown metric '{metric}' for task {task.name}")
        result[metric] = float(functions[metric]())
    return result


def predicted_labels(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    """Label ids (classification) or scores (regression) from logits (N,C)."""
    return logits[:, 0] if task.is_regression else logits.argmax(axis=1)


def layer_metrics(task: TaskSpec, all_logits: np.ndarray, labels: Sequence) -> dict[str, float]:
    """The task's main metric for every internal classifier: all_logits (N, L, C) -> {"layer_1_acc": ...}."""
    out = {}
    for i in range(all_logits.shape[1]):
        metrics = compute_metrics(task, predicted_labels(task, all_logits[:, i]), labels)
        for name, value in metrics.items():
            out[f"layer_{i + 1}_{name}"] = value
    return out
