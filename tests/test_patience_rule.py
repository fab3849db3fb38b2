"""The patience rule (PatienceRule and its small pure functions), tested without a model."""

import numpy as np
import pytest
import torch

from pabee.exit_rules import (
    PatienceRule,
    check_patience,
    check_regression_threshold,
    next_patience_counter,
    patience_reached,
    predictions_agree,
)
from pabee.modeling import gather_exit_logits


def logits_for(classes, num_labels=3):
    """(L, B, C) logits whose argmax per layer/row is ``classes[layer][row]``."""
    out = np.zeros((len(classes), len(classes[0]), num_labels), dtype=np.float32)
    for i, row in enumerate(classes):
        for b, c in enumerate(row):
            out[i, b, c] = 1.0
    return out


def patience_exit_layers(all_logits, patience, threshold):
    return PatienceRule(patience, threshold).exit_layers(all_logits)


def agreement_by_step(prev, cur, threshold):
    """Whether the patience-1 rule lets rows out after seeing ``prev`` then ``cur``: exactly their agreement."""
    rule = PatienceRule(1, threshold)
    state, done = rule.step(rule.start(len(prev)), np.asarray(prev, dtype=np.float32), 0)
    assert not done.any()
    return rule.step(state, np.asarray(cur, dtype=np.float32), 1)[1]


def test_classification_agreement_is_same_argmax():
    prev = [[2.0, 1.0], [0.0, 1.0], [0.3, 0.2]]
    cur = [[5.0, -1.0], [1.0, 0.0], [0.9, 0.1]]
    assert predictions_agree(np.array(prev), np.array(cur), 0.1).tolist() == [True, False, True]
    assert agreement_by_step(prev, cur, 0.1).tolist() == [True, False, True]


def test_regression_agreement_is_strictly_below_threshold():
    prev = np.array([[1.0], [1.0], [1.0]], dtype=np.float32)
    cur = np.array([[1.05], [1.25], [0.0]], dtype=np.float32)
    # |delta| = 0.05, 0.25, 1.0 -> with threshold 0.25 only the first agrees (strict <)
    assert predictions_agree(prev, cur, 0.25).tolist() == [True, False, False]
    assert predictions_agree(prev, cur, 0.0).tolist() == [False, False, False]
    assert agreement_by_step(prev, cur, 0.25).tolist() == [True, False, False]


def test_regression_agreement_compares_in_the_logits_precision_as_torch_does():
    # float32 differences against thresholds a hair away from them: numpy must decide as torch's float32 compare
    gen = np.random.default_rng(0)
    prev = gen.random((2000, 1), dtype=np.float32)
    cur = np.zeros((2000, 1), dtype=np.float32)
    for threshold in [float(prev[k, 0]) + gen.choice([-1, 1]) * gen.random() * 1e-8 for k in range(50)] + [0.1]:
        expected = ((torch.from_numpy(prev)[:, 0] - torch.from_numpy(cur)[:, 0]).abs() < threshold).numpy()
        assert predictions_agree(prev, cur, threshold).tolist() == expected.tolist()


def test_counter_increments_and_resets():
    counter = np.array([0, 2, 5])
    agree = np.array([True, False, True])
    assert next_patience_counter(counter, agree).tolist() == [1, 0, 6]


def test_patience_zero_never_exits():
    assert patience_reached(np.array([0, 3, 100]), 0).tolist() == [False, False, False]
    assert patience_reached(np.array([0, 3, 100]), 3).tolist() == [False, True, True]


def test_exit_layers_follow_the_rule():
    # 6 layers, 3 rows. Row 0 predicts 1 everywhere: counter 1 after layer 2, 2 after layer 3 -> exits at 3 (t=2).
    # Row 1 changes at layer 3: counter 1@2, 0@3, 1@4, 2@5 -> exits at 5.
    # Row 2 alternates: never reaches patience -> last layer 6.
    classes = [[1, 0, 0], [1, 0, 1], [1, 2, 0], [1, 2, 1], [1, 2, 0], [1, 2, 1]]
    all_logits = logits_for(classes)
    assert patience_exit_layers(all_logits, 2, 0.1).tolist() == [3, 5, 6]
    assert patience_exit_layers(all_logits, 1, 0.1).tolist() == [2, 2, 6]
    assert patience_exit_layers(all_logits, 0, 0.1).tolist() == [6, 6, 6]
    # patience >= L can never be reached: counter is at most L - 1 = 5 and the last layer is the exit anyway
    assert patience_exit_layers(all_logits, 6, 0.1).tolist() == [6, 6, 6]
    assert patience_exit_layers(all_logits, 5, 0.1).tolist() == [6, 6, 6]


def test_regression_exit_layers():
    values = np.array([[0.0, 0.0], [0.05, 1.0], [0.08, 2.0], [0.5, 3.0]], dtype=np.float32)[..., None]  # (4, 2, 1)
    # row 0: |d| = .05, .03, .42 -> counter 1, 2, 0 -> exits at layer 3 with patience 2
    assert patience_exit_layers(values, 2, 0.1).tolist() == [3, 4]
    assert patience_exit_layers(values, 2, 0.01).tolist() == [4, 4]


def test_gather_exit_logits_picks_the_exit_layer():
    all_logits = torch.arange(4 * 3 * 2, dtype=torch.float32).view(4, 3, 2)
    picked = gather_exit_logits(all_logits, torch.tensor([1, 4, 2]))
    assert torch.equal(picked, torch.stack([all_logits[0, 0], all_logits[3, 1], all_logits[1, 2]]))


@pytest.mark.parametrize("bad", [-1, -10])
def test_negative_patience_is_rejected(bad):
    with pytest.raises(ValueError, match="non-negative"):
        check_patience(bad)


@pytest.mark.parametrize("bad", [1.5, "3", None, True, 2.0, torch.tensor(2.0), np.float64(2.0)])
def test_non_integer_patience_is_rejected(bad):
    with pytest.raises(TypeError, match="patience"):
        check_patience(bad)


def test_integer_like_patience_is_accepted():
    assert check_patience(3) == 3
    assert check_patience(torch.tensor(2)) == 2
    assert check_patience(np.int64(4)) == 4 and type(check_patience(np.int64(4))) is int


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_threshold_is_rejected(bad):
    with pytest.raises(ValueError, match="regression_threshold"):
        check_regression_threshold(bad)


def test_non_numeric_threshold_is_rejected():
    with pytest.raises(TypeError):
        check_regression_threshold("0.1")
    assert check_regression_threshold(0) == 0.0
    with pytest.raises(ValueError, match="regression_threshold"):
        PatienceRule(2, -1.0)
    with pytest.raises(ValueError, match="non-negative"):
        PatienceRule(-1)
