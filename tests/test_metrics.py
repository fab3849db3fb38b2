"""Tests for the numpy metrics, against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pabee.metrics import accuracy, compute_metrics, f1_binary, matthews_corrcoef, pearson, spearman
from pabee.tasks import custom_task, get_task

# One binary example used throughout:
#   preds  = [1, 1, 0, 0, 1]
#   labels = [1, 0, 0, 1, 1]
#   TP = 2 (positions 0, 4), FP = 1 (position 1), TN = 1 (position 2), FN = 1 (position 3)
PREDS = [1, 1, 0, 0, 1]
LABELS = [1, 0, 0, 1, 1]


def test_accuracy():
    # 3 of 5 equal (positions 0, 2, 4) -> 0.6
    assert accuracy(PREDS, LABELS) == pytest.approx(0.6)
    assert accuracy(["a", "b"], ["a", "c"]) == pytest.approx(0.5)
    assert isinstance(accuracy(np.array([1]), np.array([1])), float)


def test_f1_binary():
    # 2TP / (2TP + FP + FN) = 4 / (4 + 1 + 1) = 2/3
    assert f1_binary(PREDS, LABELS) == pytest.approx(2 / 3)
    # positive = 0: predicted 0 at {2, 3}, true 0 at {1, 2} -> TP = 1, FP = 1, FN = 1 -> 2 / 4 = 0.5
    assert f1_binary(PREDS, LABELS, positive=0) == pytest.approx(0.5)


def test_f1_without_positives():
    # no predicted and no true positives -> 0.0 by convention
    assert f1_binary([0, 0, 0], [0, 0, 0]) == 0.0
    # true positives exist but none predicted -> precision undefined, TP = 0 -> 0.0
    assert f1_binary([0, 0, 0], [1, 0, 1]) == 0.0
    # all predicted positive, none true -> TP = 0 -> 0.0
    assert f1_binary([1, 1], [0, 0]) == 0.0


def test_mcc():
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    assert matthews_corrcoef(PREDS, LABELS) == pytest.approx(1 / 6)
    assert matthews_corrcoef([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)
    assert matthews_corrcoef([1, 0, 0, 1], [0, 1, 1, 0]) == pytest.approx(-1.0)
    # label values other than 0/1 give the same answer
    assert matthews_corrcoef(["y", "y", "n", "n", "y"], ["y", "n", "n", "y", "y"]) == pytest.approx(1 / 6)


def test_mcc_degenerate():
    # constant prediction: TP+FP = 0 or TN+FN = 0 -> denominator 0 -> 0.0
    assert matthews_corrcoef([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0
    assert matthews_corrcoef([0, 0, 0], [0, 1, 1]) == 0.0
    # constant labels and predictions (even if all correct) -> 0.0
    assert matthews_corrcoef([1, 1], [1, 1]) == 0.0


def test_pearson():
    # x = [1, 2, 3], y = [2, 4, 7]; means 2 and 13/3
    # dx = [-1, 0, 1], dy = [-7/3, -1/3, 8/3]; sum dx*dy = 7/3 + 8/3 = 5
    # sum dx^2 = 2, sum dy^2 = (49 + 1 + 64) / 9 = 114/9 -> r = 5 / sqrt(228/9) = 15 / sqrt(228)
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(15 / math.sqrt(228))
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson(np.arange(10.0), 2 * np.arange(10.0) + 1) == pytest.approx(1.0)


def test_pearson_constant_is_zero():
    assert pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == 0.0


def test_spearman_with_ties():
    # x = [1, 2, 2, 3] -> ranks [1, 2.5, 2.5, 4]; y = [1, 3, 2, 4] -> ranks [1, 3, 2, 4]; both means 2.5
    # dx = [-1.5, 0, 0, 1.5], dy = [-1.5, 0.5, -0.5, 1.5]
    # sum dx*dy = 2.25 + 2.25 = 4.5; sum dx^2 = 4.5; sum dy^2 = 5 -> rho = 4.5 / sqrt(22.5) = sqrt(0.9)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9))
    # ties on both sides: x ranks [1.5, 1.5, 3], y ranks [1, 2.5, 2.5]
    # dx = [-0.5, -0.5, 1], dy = [-1, 0.5, 0.5]; sum dx*dy = 0.5 - 0.25 + 0.5 = 0.75
    # sum dx^2 = 1.5, sum dy^2 = 1.5 -> rho = 0.75 / 1.5 = 0.5
    assert spearman([5, 5, 9], [0, 7, 7]) == pytest.approx(0.5)


def test_spearman_monotone():
    # any strictly increasing transform keeps the ranks -> 1.0
    assert spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)
    # ranks [1, 3, 2] vs [2, 3, 1]: dx = [-1, 1, 0], dy = [0, 1, -1]; sum dx*dy = 1; sums of squares 2 -> 0.5
    assert spearman([0.1, 0.4, 0.2], [20, 30, 10]) == pytest.approx(0.5)


@pytest.mark.parametrize("function", [accuracy, f1_binary, matthews_corrcoef, pearson, spearman])
def test_bad_inputs(function):
    with pytest.raises(ValueError, match="length"):
        function([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        function([], [])
    with pytest.raises(ValueError, match="1-D"):
        function([[0.1, 0.9], [0.8, 0.2]], [1, 0])


def test_non_finite_rejected():
    with pytest.raises(ValueError, match="finite"):
        pearson([1.0, float("nan")], [1.0, 2.0])


def test_compute_metrics_keys_and_types():
    cases = {
        "cola": ({"mcc": 1 / 6}, PREDS, LABELS),
        "mrpc": ({"acc": 0.6, "f1": 2 / 3}, PREDS, LABELS),
        "qqp": ({"acc": 0.6, "f1": 2 / 3}, PREDS, LABELS),
        "sst-2": ({"acc": 0.6}, PREDS, LABELS),
        "mnli": ({"acc": 0.5}, [0, 1, 2, 2], [0, 1, 1, 0]),
        "sts-b": ({"pearson": 15 / math.sqrt(228), "spearmanr": 1.0}, [1, 2, 3], [2, 4, 7]),
    }
    for name, (expected, preds, labels) in cases.items():
        result = compute_metrics(get_task(name), preds, labels)
        assert list(result) == list(get_task(name).metric_names)
        assert result == pytest.approx(expected)
        assert all(type(value) is float for value in result.values())


def test_compute_metrics_accepts_label_strings():
    rte = get_task("rte")
    # ids: entailment = 0, not_entailment = 1 -> 2 of 3 right
    result = compute_metrics(rte, [0, 1, 1], ["entailment", "not_entailment", "entailment"])
    assert result == pytest.approx({"acc": 2 / 3})
    with pytest.raises(ValueError, match="not one of"):
        compute_metrics(rte, [0], ["maybe"])


def test_compute_metrics_custom_and_errors():
    spec = custom_task(["neg", "pos"])
    assert compute_metrics(spec, np.array(PREDS), np.array(LABELS)) == pytest.approx(
        {"acc": 0.6, "f1": 2 / 3}
    )
    with pytest.raises(ValueError):
        compute_metrics(get_task("mrpc"), [1, 0], [1])
    with pytest.raises(ValueError):
        compute_metrics(get_task("sts-b"), [], [])
