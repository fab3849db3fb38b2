"""The hybrid exit rule (patience over confident predictions): hand-computed exits, its "hybrid:3@0.9" spelling
in ExitRule, the CLI and the records, and its refusal of regression models."""

import math

import numpy as np
import pytest
import torch
from tiny_models import tiny_backbone

from pabee.cli import exit_rules_from_args, pabee_parser
from pabee.config import PabeeConfig
from pabee.evaluate import EvalRecord
from pabee.exit_rules import ExitRule, HybridRule, PatienceRule, check_rule_supported, rule_exit_layers
from pabee.modeling import PabeeForSequenceClassification
from pabee.records import plot_points, record_key
from pabee.tables import rule_name


def two_class(p: float) -> list[float]:
    """Logits whose softmax is (p, 1 - p): class 0 when p > 0.5."""
    return [math.log(p / (1 - p)), 0.0]


# (L=5, B=4, C=2), p = probability of class 0 at each layer:
# row 0 agrees everywhere, confident (0.95) from layer 3; row 1 is confident but flips class every layer;
# row 2 agrees and is confident from layer 1; row 3 agrees everywhere but is unsure (0.6) at layer 3.
PROBS = [[0.6, 0.95, 0.99, 0.95],
         [0.6, 0.05, 0.99, 0.95],
         [0.95, 0.95, 0.99, 0.6],
         [0.95, 0.05, 0.99, 0.95],
         [0.95, 0.95, 0.99, 0.95]]
ALL_LOGITS = np.array([[two_class(p) for p in layer] for layer in PROBS], dtype=np.float32)


def test_hand_computed_exits():
    # hybrid 2@0.9, row 0: layer 2 agrees but p=0.6 -> 0; layer 3 -> 1; layer 4 -> 2: exit at 4.
    # row 1 never agrees: 5 (the last layer). row 2: layers 2, 3 -> 1, 2: exit at 3.
    # row 3: layer 2 -> 1; layer 3 agrees but p=0.6 -> back to 0; layer 4 -> 1; never 2: 5.
    assert HybridRule(2, 0.9).exit_layers(ALL_LOGITS).tolist() == [4, 5, 3, 5]
    assert HybridRule(1, 0.9).exit_layers(ALL_LOGITS).tolist() == [3, 5, 2, 2]
    # plain patience 2 ignores the confidence: rows 0 and 3 leave at layer 3
    assert PatienceRule(2).exit_layers(ALL_LOGITS).tolist() == [3, 5, 3, 3]
    # with two classes the top probability is always >= 0.5: hybrid p@0.5 is patience p
    for patience in (1, 2, 3):
        assert (HybridRule(patience, 0.5).exit_layers(ALL_LOGITS).tolist()
                == PatienceRule(patience).exit_layers(ALL_LOGITS).tolist())
    assert rule_exit_layers(ALL_LOGITS, "hybrid:2@0.9").tolist() == [4, 5, 3, 5]
    assert rule_exit_layers(torch.from_numpy(ALL_LOGITS), ExitRule("hybrid", 2, 0.9)).tolist() == [4, 5, 3, 5]


def test_spelling_label_and_equality():
    rule = ExitRule.parse(" Hybrid : 3 @ 0.9 ")
    assert rule == ExitRule("hybrid", 3, 0.9) and rule.value == 3 and type(rule.value) is int
    assert str(rule) == "hybrid:3@0.9" and ExitRule.parse(str(rule)) == rule
    assert rule.label == "hybrid 3@0.9" and not rule.is_full_depth
    assert ExitRule("hybrid", 2.0, 1).threshold == 1.0 and ExitRule("hybrid", 2.0, 1).value == 2
    assert len({ExitRule("hybrid", 3, 0.9), ExitRule("hybrid", 3, 0.95), ExitRule.parse("hybrid:3@0.90")}) == 2
    assert ExitRule("entropy", 0.3).threshold is None and str(ExitRule("entropy", 0.3)) == "entropy:0.3"


@pytest.mark.parametrize(
    ("text", "match"),
    [("hybrid:3", "needs a confidence threshold too: write it 'hybrid:3@0.9'"),
     ("hybrid:0@0.9", "hybrid value must be an integer >= 1"),
     ("hybrid:1.5@0.9", "hybrid value must be an integer"),
     ("hybrid:2@0", r"hybrid confidence threshold must be in \(0, 1\]"),
     ("hybrid:2@1.2", r"hybrid confidence threshold must be in \(0, 1\]"),
     ("hybrid:2@nan", "finite number"),
     ("hybrid:2@", "not a number"),
     ("hybrid:2@x", "not a number"),
     ("entropy:0.3@0.5", "entropy exit rule has one setting"),
     ("patience:2@0.9", "patience exit rule has one setting")],
)
def test_bad_spellings_are_one_line_errors(text, match):
    with pytest.raises(ValueError, match=match):
        ExitRule.parse(text)


def test_regression_is_refused():
    with pytest.raises(ValueError, match="hybrid exit rule needs class probabilities.*regression"):
        check_rule_supported(ExitRule("hybrid", 2, 0.9), num_labels=1)
    with pytest.raises(ValueError, match="hybrid exit rule .*classification"):
        HybridRule(2, 0.9).exit_layers(np.zeros((4, 3, 1), dtype=np.float32))
    model = PabeeForSequenceClassification(tiny_backbone("bert", num_labels=1), PabeeConfig())
    with pytest.raises(ValueError, match="hybrid exit rule .*regression"):
        model(torch.ones(2, 5, dtype=torch.long), exit_rule="hybrid:2@0.9")


def test_command_line_values():
    args = pabee_parser().parse_args(["eval", "--exit_rule", "hybrid", "--exit_values", "2@0.9, 3@0.95"])
    assert exit_rules_from_args(args) == [ExitRule("hybrid", 2, 0.9), ExitRule("hybrid", 3, 0.95)]
    for values, match in [("2", "--exit_values: the hybrid exit rule needs a confidence threshold"),
                          ("2@1.5", "--exit_values: the hybrid confidence threshold")]:
        args = pabee_parser().parse_args(["eval", "--exit_rule", "hybrid", "--exit_values", values])
        with pytest.raises(ValueError, match=match):
            exit_rules_from_args(args)
    args = pabee_parser().parse_args(["eval", "--exit_rule", "hybrid"])
    with pytest.raises(ValueError, match=r"needs --exit_values \(comma-separated, e.g. 2@0.9"):
        exit_rules_from_args(args)


def test_command_line_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as done:
        pabee_parser().parse_args(["eval", "--exit_rule", "hybrid", "--exit_values", "2@x"])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "PATIENCE@CONFIDENCE" in err


def record(rule: ExitRule, batch_size: int = 8) -> EvalRecord:
    return EvalRecord(
        checkpoint="final", task="rte", split="dev", patience=None, exit_rule=rule.kind, exit_value=rule.value,
        regression_threshold=None, metrics={"acc": 0.5}, num_layers=4, avg_exit_layer=2.0, layer_speedup=2.0,
        layers_saved=0.5, eval_seconds=1.0, examples_per_second=8.0, num_examples=8, batch_size=batch_size,
        exit_layer_histogram={}, exit_threshold=rule.threshold,
    )


def test_records_keep_the_threshold_apart():
    a, b = record(ExitRule("hybrid", 2, 0.9)), record(ExitRule("hybrid", 2, 0.95))
    assert record_key(vars(a)) != record_key(vars(b))
    assert len(plot_points([a, b], "rte", "dev", 8)) == 2
    assert rule_name(a) == "hybrid 2@0.9" and rule_name(b) == "hybrid 2@0.95"
    # records of other rules (and those written before the field existed) key as before: no threshold
    old = {k: v for k, v in vars(record(ExitRule("entropy", 0.3))).items() if k != "exit_threshold"}
    assert record_key(old) == record_key(vars(record(ExitRule("entropy", 0.3))))
