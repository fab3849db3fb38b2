"""The evaluation harness with several exit rules: records, their merge key, the table and the trade-off plot."""

import json

import numpy as np
import pytest
import torch
from tiny_models import random_batch, tiny_backbone

from pabee.config import PabeeConfig
from pabee.evaluate import (
    EvalRecord,
    evaluate_exit_rules,
    evaluate_patiences,
    format_table,
    plot_tradeoff,
    save_records,
)
from pabee.exit_rules import ExitRule
from pabee.features import Features
from pabee.modeling import PabeeForSequenceClassification
from pabee.tasks import get_task


def record(kind, value, acc=0.5, avg=2.0, checkpoint="final", batch_size=8, wall=1.0):
    return EvalRecord(
        checkpoint=checkpoint, task="rte", split="dev", patience=value if kind == "patience" else None,
        exit_rule=kind, exit_value=value, regression_threshold=None, metrics={"acc": acc}, num_layers=4,
        avg_exit_layer=avg, layer_speedup=4 / avg, layers_saved=1 - avg / 4, eval_seconds=1.0 / (wall or 1.0),
        examples_per_second=10.0, num_examples=10, batch_size=batch_size, exit_layer_histogram={"4": 10},
        wall_speedup=wall,
    )


def keys(path):
    return sorted((r["exit_rule"], r["exit_value"], r["metrics"]["acc"]) for r in json.loads(path.read_text()))


def test_rules_never_overwrite_each_other(tmp_path):
    save_records([record("patience", 0, acc=0.5, avg=4), record("patience", 3, acc=0.6)], tmp_path)
    path = save_records(
        [record("patience", 0, acc=0.51, avg=4), record("confidence", 0.5, acc=0.7), record("confidence", 0.9)],
        tmp_path,
    )
    assert keys(path) == [("confidence", 0.5, 0.7), ("confidence", 0.9, 0.5), ("patience", 0, 0.51),
                          ("patience", 3, 0.6)]  # patience 0 re-measured in place, nothing else replaced
    save_records([record("entropy", 0.3), record("layer", 3), record("entropy", 0.3, batch_size=1)], tmp_path)
    assert len(json.loads(path.read_text())) == 7
    save_records([record("entropy", 0.3, acc=0.9)], tmp_path)
    assert ("entropy", 0.3, 0.9) in keys(path) and len(json.loads(path.read_text())) == 7


def test_records_written_before_exit_rules_existed_are_patience_records(tmp_path):
    old = {k: v for k, v in vars(record("patience", 3, acc=0.1)).items() if k not in ("exit_rule", "exit_value")}
    (tmp_path / "eval_results.json").write_text(json.dumps([old]))
    path = save_records([record("patience", 3, acc=0.2), record("entropy", 3.0, acc=0.3)], tmp_path)
    saved = json.loads(path.read_text())
    assert sorted((r["exit_rule"], r["metrics"]["acc"]) for r in saved) == [("entropy", 0.3), ("patience", 0.2)]


def test_table_has_a_rule_column():
    table = format_table([record("patience", 0, avg=4), record("patience", 3), record("entropy", 0.3),
                          record("confidence", 0.9), record("layer", 2)])
    header, _rule, *rows = table.splitlines()
    assert header.split()[:3] == ["checkpoint", "split", "rule"]
    start, end = header.index("rule"), header.index("acc")
    assert [row[start:end].strip() for row in rows] == ["full", "patience 3", "entropy 0.3", "confidence 0.9",
                                                         "layer 2"]


def test_plot_draws_one_curve_per_rule_kind(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.plot

    def spy(self, xs, ys, *args, **kwargs):
        drawn.append((kwargs.get("label"), list(xs), list(ys)))
        return original(self, xs, ys, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    records = [
        record("patience", 0, acc=0.8, avg=4, wall=1.0), record("patience", 2, acc=0.75, avg=2.5, wall=1.4),
        record("entropy", 0.3, acc=0.7, avg=2.0, wall=1.8), record("entropy", 0.1, acc=0.78, avg=3.0, wall=1.2),
        record("layer", 2, acc=0.6, avg=2.0, wall=None),
    ]
    path = plot_tradeoff(records, tmp_path / "t.png", "acc")
    assert path.stat().st_size > 1000
    curves = {label: (xs, ys) for label, xs, ys in drawn}
    assert set(curves) == {"patience", "entropy", "layer", "full depth"}
    assert curves["entropy"] == ([1.0, 4 / 3, 2.0], [0.8, 0.78, 0.7])  # starts at the full-depth baseline
    assert curves["patience"] == ([1.0, 1.6], [0.8, 0.75])
    drawn.clear()
    plot_tradeoff(records, tmp_path / "w.png", "acc", speedup="wall")
    curves = {label: (xs, ys) for label, xs, ys in drawn}
    assert set(curves) == {"patience", "entropy", "full depth"}  # no wall-clock speed-up: left out
    assert curves["entropy"][0] == [1.0, 1.2, 1.8]
    with pytest.raises(ValueError, match="speedup"):
        plot_tradeoff(records, tmp_path / "x.png", "acc", speedup="flops")


def tiny_features(n=12, num_labels=3):
    ids, mask = random_batch(batch=n, max_len=10, seed=4)
    rows = [ids[r, : int(mask[r].sum())].tolist() for r in range(n)]
    return Features(rows, None, [r % num_labels for r in range(n)])


@pytest.fixture(scope="module")
def tiny_model():
    model = PabeeForSequenceClassification(tiny_backbone("bert", 3), PabeeConfig())
    torch.manual_seed(3)
    for head in model.classifiers:
        torch.nn.init.normal_(head.weight, std=1.0)
    return model


def test_evaluate_exit_rules_sweeps_mixed_rules(tiny_model):
    features = tiny_features()
    task = get_task("mnli")
    rules = ["confidence:0.4", ExitRule("layer", 2), ExitRule("patience", 1), ExitRule("layer", 2)]
    records = evaluate_exit_rules(tiny_model, features, task, rules, 4, "final", "dev", warmup=False)
    assert [(r.exit_rule, r.exit_value, r.patience) for r in records] == [
        ("patience", 0, 0), ("confidence", 0.4, None), ("layer", 2, None), ("patience", 1, 1)]
    full, _confidence, layer, _patience = records
    assert full.avg_exit_layer == 4 and full.wall_speedup == pytest.approx(1.0)
    assert layer.avg_exit_layer == 2 and layer.exit_layer_histogram == {"1": 0, "2": 12, "3": 0, "4": 0}
    assert all(r.wall_speedup is not None and r.num_examples == 12 for r in records)
    assert set(format_table(records).split()) >= {"full", "confidence", "0.4", "layer", "2", "patience", "1"}


def test_evaluate_patiences_still_gives_patience_records(tiny_model):
    records = evaluate_patiences(tiny_model, tiny_features(), get_task("mnli"), [2, 1], 4, "final", "dev",
                                 warmup=False)
    assert [(r.exit_rule, r.exit_value, r.patience) for r in records] == [
        ("patience", 0, 0), ("patience", 2, 2), ("patience", 1, 1)]


def test_probability_rules_on_a_regression_task_fail_before_running():
    model = PabeeForSequenceClassification(tiny_backbone("bert", 1), PabeeConfig())
    features = Features([[5, 6, 7]], None, [1.0])
    with pytest.raises(ValueError, match="entropy exit rule"):
        evaluate_exit_rules(model, features, get_task("stsb"), ["patience:2", "entropy:0.3"], 4, "final", "dev")


def test_interleaved_timing_rounds_keep_predictions_and_time_every_rule(tiny_model):
    from pabee.evaluate import predict

    features = tiny_features()
    task = get_task("mnli")
    rules = [ExitRule("patience", 1), ExitRule("entropy", 0.5), ExitRule("layer", 2)]
    records = evaluate_exit_rules(tiny_model, features, task, rules, 4, "final", "dev", timing_rounds=3)
    for rule, rec in zip([ExitRule("patience", 0), *rules], records):
        alone = predict(tiny_model, features, 1, exit_rule=rule)  # one at a time, no interleaving
        histogram = np.bincount(alone.exit_layers, minlength=5)[1:]
        assert rec.exit_layer_histogram == {str(i + 1): int(c) for i, c in enumerate(histogram)}
        assert rec.avg_exit_layer == pytest.approx(alone.exit_layers.mean())
        seconds = rec.extra["eval_seconds_rounds"]
        assert len(seconds) == 3 and all(t > 0 for t in seconds)
        # the rounds are recorded to the microsecond: their mean is within half a microsecond of eval_seconds
        assert rec.eval_seconds == pytest.approx(np.mean(seconds), abs=5e-7)
        assert rec.wall_speedup == pytest.approx(records[0].eval_seconds / rec.eval_seconds)


@pytest.mark.parametrize("rounds", [0, -1, 1.5, True])
def test_timing_rounds_must_be_a_positive_integer(tiny_model, rounds):
    with pytest.raises(ValueError, match="timing_rounds"):
        evaluate_exit_rules(tiny_model, tiny_features(), get_task("mnli"), [], 4, "final", "dev",
                            timing_rounds=rounds)


def test_timing_interleaves_rules_in_blocks_of_consecutive_batches(tiny_model, monkeypatch):
    import pabee.evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "INTERLEAVE_EXAMPLES", 8)  # batch size 4 -> blocks of 2 batches
    calls = []
    original = tiny_model.forward

    def recording_forward(*args, exit_rule=None, **kwargs):
        calls.append((str(exit_rule), int(kwargs["input_ids"].size(0))))
        return original(*args, exit_rule=exit_rule, **kwargs)

    monkeypatch.setattr(tiny_model, "forward", recording_forward)
    records = evaluate_exit_rules(
        tiny_model, tiny_features(n=10), get_task("mnli"), ["patience:1"], 4, "final", "dev", warmup=False
    )
    # 10 examples -> batches of 4, 4, 2 -> blocks [4, 4], [2]; the rule order rotates from block to block
    assert calls == [("patience:0", 4), ("patience:0", 4), ("patience:1", 4), ("patience:1", 4),
                     ("patience:1", 2), ("patience:0", 2)]
    assert [r.extra["timing_block_batches"] for r in records] == [2, 2]
