"""ExitRule and the entropy / confidence / fixed-layer rules (rule objects and their per-layer tests), on
hand-made logits."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from pabee import ExitRule as ExportedExitRule
from pabee.exit_rules import (
    RULE_CLASSES,
    ConfidenceRule,
    EntropyRule,
    ExitRule,
    FixedLayerRule,
    PatienceRule,
    check_rule_supported,
    confidence_reached,
    entropy_reached,
    max_softmax_probability,
    patience_rule,
    rule_exit_layers,
    softmax_entropy,
    to_exit_rule,
)
from pabee.torch_backend import tensor_to_numpy


def entropy_exit_layers(all_logits, threshold):
    return EntropyRule(threshold).exit_layers(all_logits)


def confidence_exit_layers(all_logits, threshold):
    return ConfidenceRule(threshold).exit_layers(all_logits)


def fixed_exit_layers(all_logits, layer):
    return FixedLayerRule(layer).exit_layers(all_logits)


def patience_exit_layers(all_logits, patience, threshold):
    return PatienceRule(patience, threshold).exit_layers(all_logits)


def two_class(p: float) -> list[float]:
    """Logits whose softmax is exactly (p, 1 - p) in real arithmetic."""
    return [math.log(p / (1 - p)), 0.0]


def binary_entropy(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


# Hand-computed: H(0.5) = ln 2 = 0.693147, H(0.75) = 0.562335, H(0.9) = 0.325083, H(0.99) = 0.056001 (nats).
HAND_ENTROPIES = {0.5: 0.693147, 0.75: 0.562335, 0.9: 0.325083, 0.99: 0.056001}


def test_entropy_matches_hand_computed_values():
    logits = np.array([two_class(p) for p in HAND_ENTROPIES], dtype=np.float32)
    expected = np.array(list(HAND_ENTROPIES.values()))
    np.testing.assert_allclose(softmax_entropy(logits), expected, atol=1e-5, rtol=0)
    for p, h in HAND_ENTROPIES.items():
        assert binary_entropy(p) == pytest.approx(h, abs=1e-6)
    uniform3 = softmax_entropy(np.zeros((2, 3), dtype=np.float32))
    np.testing.assert_allclose(uniform3, np.full(2, math.log(3)), atol=1e-6, rtol=0)  # ln 3 = 1.098612


def test_entropy_of_a_certain_prediction_is_zero_not_nan():
    h = softmax_entropy(np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]], dtype=np.float32))
    assert not np.isnan(h).any()
    assert h[0].item() == 0.0


def test_entropy_and_confidence_are_computed_in_float32_for_half_logits():
    logits = np.array([two_class(0.9)], dtype=np.float16)
    assert softmax_entropy(logits).dtype == np.float32
    assert max_softmax_probability(logits).dtype == np.float32
    # torch half-precision logits reach the rules as float32 arrays (numpy has no bfloat16)
    half = tensor_to_numpy(torch.tensor([two_class(0.9)], dtype=torch.bfloat16))
    assert half.dtype == np.float32
    assert softmax_entropy(half).dtype == np.float32 and max_softmax_probability(half).dtype == np.float32
    assert softmax_entropy(np.array([two_class(0.9)])).dtype == np.float64  # float64 logits stay float64


def test_max_probability_matches_hand_computed_values():
    logits = np.array([two_class(0.75), two_class(0.1), [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(max_softmax_probability(logits), [0.75, 0.9, 0.5], atol=1e-6, rtol=0)
    # three classes with logits (ln 2, 0, 0): probabilities (1/2, 1/4, 1/4)
    three = np.array([[math.log(2), 0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(max_softmax_probability(three), [0.5], rtol=1.3e-6, atol=1e-5)


def test_entropy_test_is_strictly_below_the_threshold():
    logits = np.array([two_class(0.5), two_class(0.9), [1000.0, 0.0]], dtype=np.float32)  # H = 0.693, 0.325, 0
    assert entropy_reached(logits, 0.4).tolist() == [False, True, True]
    assert entropy_reached(logits, 1.0).tolist() == [True, True, True]
    assert entropy_reached(logits, 0.0).tolist() == [False, False, False]  # H < 0 never holds


def test_confidence_test_is_at_least_the_threshold():
    logits = np.array([[0.0, 0.0], two_class(0.9), [1000.0, 0.0]], dtype=np.float32)  # max p = 0.5, 0.9, 1.0
    assert confidence_reached(logits, 0.5).tolist() == [True, True, True]  # >= : 0.5 passes 0.5
    assert confidence_reached(logits, 0.8).tolist() == [False, True, True]
    assert confidence_reached(logits, 1.0).tolist() == [False, False, True]


# (L=4, B=3, C=2): row 0 grows more confident layer by layer, row 1 is sure at layer 1, row 2 never is.
PROBS = [[0.5, 0.99, 0.5], [0.75, 0.5, 0.5], [0.9, 0.5, 0.5], [0.99, 0.5, 0.5]]
ALL_LOGITS = np.array([[two_class(p) for p in layer] for layer in PROBS], dtype=np.float32)


def test_entropy_exit_layers():
    # entropies per row 0: 0.693, 0.562, 0.325, 0.056; row 1: 0.056 at layer 1; row 2: 0.693 everywhere
    assert entropy_exit_layers(ALL_LOGITS, 0.4).tolist() == [3, 1, 4]
    assert entropy_exit_layers(ALL_LOGITS, 0.6).tolist() == [2, 1, 4]
    assert entropy_exit_layers(ALL_LOGITS, 0.1).tolist() == [4, 1, 4]
    assert entropy_exit_layers(ALL_LOGITS, 0.0).tolist() == [4, 4, 4]
    assert entropy_exit_layers(ALL_LOGITS, 5.0).tolist() == [1, 1, 1]


def test_confidence_exit_layers():
    assert confidence_exit_layers(ALL_LOGITS, 0.8).tolist() == [3, 1, 4]
    assert confidence_exit_layers(ALL_LOGITS, 0.95).tolist() == [4, 1, 4]
    assert confidence_exit_layers(ALL_LOGITS, 0.5).tolist() == [1, 1, 1]  # two classes: max p >= 0.5 always


def test_fixed_exit_layers():
    assert fixed_exit_layers(ALL_LOGITS, 2).tolist() == [2, 2, 2]
    assert fixed_exit_layers(ALL_LOGITS, 1).tolist() == [1, 1, 1]
    assert fixed_exit_layers(ALL_LOGITS, 9).tolist() == [4, 4, 4]  # k >= L: the last layer
    assert fixed_exit_layers(ALL_LOGITS, 2).dtype == np.int64


def test_rule_exit_layers_dispatches_to_every_rule():
    assert rule_exit_layers(ALL_LOGITS, ExitRule("entropy", 0.4)).tolist() == [3, 1, 4]
    assert rule_exit_layers(ALL_LOGITS, ExitRule("confidence", 0.8)).tolist() == [3, 1, 4]
    assert rule_exit_layers(ALL_LOGITS, ExitRule("layer", 3)).tolist() == [3, 3, 3]
    for patience in (0, 1, 2):
        assert np.array_equal(
            rule_exit_layers(ALL_LOGITS, ExitRule("patience", patience), 0.1),
            patience_exit_layers(ALL_LOGITS, patience, 0.1),
        )
    # a torch tensor on the CPU and a "kind:value" string work too
    assert rule_exit_layers(torch.from_numpy(ALL_LOGITS), "entropy:0.4").tolist() == [3, 1, 4]


def test_regression_logits_are_refused_by_the_probability_rules():
    regression = np.zeros((4, 3, 1), dtype=np.float32)
    for kind, fn in [("entropy", entropy_exit_layers), ("confidence", confidence_exit_layers)]:
        with pytest.raises(ValueError, match=f"{kind} exit rule .*classification"):
            fn(regression, 0.5)
        with pytest.raises(ValueError, match=f"{kind} exit rule .*regression"):
            check_rule_supported(ExitRule(kind, 0.5), num_labels=1)
        check_rule_supported(ExitRule(kind, 0.5), num_labels=2)
    check_rule_supported(ExitRule("layer", 2), num_labels=1)
    check_rule_supported(ExitRule("patience", 2), num_labels=1)
    assert rule_exit_layers(regression, ExitRule("layer", 2)).tolist() == [2, 2, 2]


# ------------------------------------------------------------------------------------------------ ExitRule


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("entropy:0.3", "entropy", 0.3),
        ("confidence:0.9", "confidence", 0.9),
        ("confidence:1", "confidence", 1.0),
        ("patience:3", "patience", 3),
        ("patience:0", "patience", 0),
        ("layer:2", "layer", 2),
        ("layer:2.0", "layer", 2),
        (" Entropy : 1e-2 ", "entropy", 0.01),
    ],
)
def test_parse(text, kind, value):
    rule = ExitRule.parse(text)
    assert rule == ExitRule(kind, value)
    assert rule.kind == kind and rule.value == value and type(rule.value) is type(value)
    assert ExitRule.parse(str(rule)) == rule


def test_label_and_string_form():
    assert ExitRule("patience", 3).label == "patience 3"
    assert ExitRule("entropy", 0.3).label == "entropy 0.3"
    assert ExitRule("confidence", 0.9).label == "confidence 0.9"
    assert ExitRule("layer", 2.0).label == "layer 2"
    assert str(ExitRule("entropy", 0.05)) == "entropy:0.05"
    assert ExitRule("patience", 0).is_full_depth and not ExitRule("patience", 1).is_full_depth
    assert not ExitRule("layer", 12).is_full_depth


@pytest.mark.parametrize(
    ("kind", "value", "match"),
    [
        ("depth", 2, "unknown exit rule 'depth'"),
        ("patience", -1, "patience value must be an integer >= 0"),
        ("patience", 1.5, "patience value must be an integer"),
        ("layer", 0, "layer value must be an integer >= 1"),
        ("layer", 2.5, "layer value must be an integer"),
        ("layer", -3, "layer value"),
        ("confidence", 0, r"confidence threshold must be in \(0, 1\]"),
        ("confidence", 1.01, r"confidence threshold must be in \(0, 1\]"),
        ("confidence", -0.5, "confidence threshold"),
        ("entropy", -0.1, "entropy threshold must be >= 0"),
        ("entropy", float("nan"), "finite number"),
        ("entropy", float("inf"), "finite number"),
        ("patience", True, "finite number"),
        ("entropy", "0.3", "finite number"),
        ("layer", None, "finite number"),
    ],
)
def test_invalid_rules_are_rejected(kind, value, match):
    with pytest.raises(ValueError, match=match):
        ExitRule(kind, value)


@pytest.mark.parametrize(
    ("text", "match"),
    [("entropy", "kind:value"), ("entropy=0.3", "kind:value"), ("entropy:abc", "not a number"),
     ("speed:2", "unknown exit rule"), ("confidence:1.5", "confidence threshold"), ("layer:0", ">= 1")],
)
def test_parse_errors(text, match):
    with pytest.raises(ValueError, match=match):
        ExitRule.parse(text)


def test_rules_are_frozen_hashable_values():
    rule = ExitRule("entropy", 1)
    assert rule == ExitRule("entropy", 1.0) and hash(rule) == hash(ExitRule("entropy", 1.0))
    assert len({ExitRule("patience", 2), ExitRule.parse("patience:2"), ExitRule("layer", 2)}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.value = 0.5
    assert ExportedExitRule is ExitRule


def test_to_exit_rule_and_patience_rule():
    rule = ExitRule("layer", 2)
    assert to_exit_rule(rule) is rule
    assert to_exit_rule("confidence:0.7") == ExitRule("confidence", 0.7)
    with pytest.raises(TypeError, match="exit_rule"):
        to_exit_rule(0.7)
    for p in (0, 3, 32, 100):
        assert patience_rule(p) == ExitRule("patience", p)


def test_every_kind_builds_its_rule_object_from_one_table():
    assert list(RULE_CLASSES) == ["patience", "entropy", "confidence", "layer", "hybrid"]
    built = {kind: ExitRule(kind, *settings).build(0.3) for kind, settings in
             [("patience", (2,)), ("entropy", (0.4,)), ("confidence", (0.8,)), ("layer", (3,)), ("hybrid", (2, 0.7))]}
    assert {kind: type(rule) for kind, rule in built.items()} == RULE_CLASSES
    assert built["patience"].patience == 2 and built["patience"].regression_threshold == 0.3
    assert built["entropy"].threshold == 0.4 and built["confidence"].threshold == 0.8 and built["layer"].layer == 3
    assert built["hybrid"].patience == 2 and built["hybrid"].confidence == 0.7
    assert ExitRule("patience", 1).build().regression_threshold == 0.1  # the default regression threshold
    # only the rules that need no per-layer decision have a static depth
    assert [built[k].static_depth(6) for k in RULE_CLASSES] == [None, None, None, 3, None]
    assert ExitRule("patience", 0).build().static_depth(6) == 6 and FixedLayerRule(9).static_depth(6) == 6
    for kind in ("entropy", "confidence", "hybrid"):
        assert built[kind].needs_probabilities and type(built[kind]).needs_probabilities
    assert not built["patience"].needs_probabilities and not built["layer"].needs_probabilities
    with pytest.raises(ValueError, match="confidence threshold"):
        ConfidenceRule(1.5)
    with pytest.raises(ValueError, match="layer value must be an integer >= 1"):
        FixedLayerRule(0)
