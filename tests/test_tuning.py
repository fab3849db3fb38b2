"""pabee tune's core: candidates scored from all layers' logits equal running the model with each rule; the choice
(fastest within the budget, ties, full depth); the saved default exit rule reaching forward, the predictor, serve,
the pipeline and the ONNX export; old pabee_config.json files; the held-out split."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from run_fixtures import save_tiny_run
from tiny_models import random_features, spread_model, tiny_backbone

from pabee.config import PabeeConfig
from pabee.data import Example
from pabee.data.holdout import hold_out, holdout_size, rebuild_holdout
from pabee.evaluate import predict
from pabee.exit_defaults import default_exit_rule
from pabee.exit_rules import ExitRule
from pabee.metrics import compute_metrics, predicted_labels
from pabee.modeling import PabeeForSequenceClassification
from pabee.tasks import custom_task
from pabee.tune_run import save_tuning
from pabee.tuning import (
    CONFIDENCES,
    ENTROPY_FRACTIONS,
    Candidate,
    all_layer_logits,
    candidate_exit_rules,
    choose,
    tune,
    tuning_candidates,
)


def run_batch(folder, seed: int):
    """A padded batch of token ids (and mask) within the tiny run's vocabulary."""
    from pabee.features import pad_batch

    vocab = PabeeForSequenceClassification.from_pretrained(folder).config.vocab_size
    batch = pad_batch(random_features(8, 3, seed, vocab), range(8), 0)
    return batch["input_ids"], batch["attention_mask"]


@pytest.mark.parametrize("num_labels", [3, 1])
def test_replayed_candidates_equal_running_the_model_with_each_rule(num_labels):
    model = spread_model(num_labels)
    features = random_features(40, num_labels)
    task = custom_task(None if num_labels == 1 else ["a", "b", "c"])
    logits = all_layer_logits(model, features, batch_size=16)
    candidates = tuning_candidates(num_labels, model.num_layers, regression_thresholds=(0.05, 0.3, 1.0))
    result = tune(logits, features.labels, task, 0.5, candidates)
    assert len(result.scores) == len(candidates)
    assert len({round(s.avg_exit_layer, 6) for s in result.scores}) > 3, "exits should vary between candidates"
    for s in [result.full, *result.scores]:
        c = s.candidate
        threshold = c.regression_threshold if c.regression_threshold is not None else 0.1
        run = predict(model, features, 5, exit_rule=c.rule, regression_threshold=threshold)  # the real early exit
        assert compute_metrics(task, predicted_labels(task, run.logits), features.labels) == pytest.approx(
            s.metrics, abs=1e-6), c.label  # regression values: float rounding of another batching
        assert s.avg_exit_layer == pytest.approx(float(run.exit_layers.mean())), c.label
        assert s.exit_layer_histogram == np.bincount(run.exit_layers, minlength=7)[1:].tolist(), c.label


def test_candidates_are_the_reports_and_regression_pairs_patience_with_thresholds():
    rules = candidate_exit_rules(3, 6)
    assert [r.value for r in rules if r.kind == "patience"] == [1, 2, 3, 4, 5]
    assert [r.value for r in rules if r.kind == "entropy"] == pytest.approx([f * math.log(3) for f in ENTROPY_FRACTIONS])
    assert [r.value for r in rules if r.kind == "confidence"] == list(CONFIDENCES)
    assert [r.value for r in rules if r.kind == "layer"] == [1, 2, 3, 4, 5]
    assert {c.rule.kind for c in tuning_candidates(2, 6)} == {"patience", "entropy", "confidence"}  # no truncation
    regression = tuning_candidates(1, 4, regression_thresholds=(0.1, 0.5))
    assert [(c.rule.value, c.regression_threshold) for c in regression] == [
        (1, 0.1), (1, 0.5), (2, 0.1), (2, 0.5), (3, 0.1), (3, 0.5)]
    with pytest.raises(ValueError, match="unknown exit rule kind"):
        candidate_exit_rules(2, 6, ["hybridish"])


@pytest.mark.parametrize("speedups, metrics, full, drop, expected", [
    ([2.0, 1.5, 3.0], [0.80, 0.85, 0.70], 0.85, 5.0, 0),  # the fastest within 5 points; 3.0 is too far below
    ([2.0, 1.5, 3.0], [0.80, 0.85, 0.70], 0.85, 4.0, 1),  # 0.80 is 5 points below: out
    ([1.5, 1.5, 1.2], [0.80, 0.82, 0.90], 0.82, 1.0, 1),  # equally fast: the higher metric
    ([1.5, 1.5], [0.82, 0.82], 0.82, 0.5, 0),  # equal in both: the first
    ([2.0, 3.0], [0.50, 0.40], 0.82, 0.5, None),  # nothing within the budget: full depth
    ([1.0, 1.0], [0.82, 0.82], 0.82, 0.5, None),  # within, but not faster than full depth
    ([1.4], [0.6943], 0.6993, 0.5, 0),  # exactly 0.5 points below (0.6993 - 0.005 in floating point)
    ([1.4, 1.2], [0.69, 0.70], 0.70, 0.0, 1),  # max_drop 0: never below full depth
    ([1.4], [0.75], 0.70, 0.0, 0),  # above full depth is fine
])
def test_choose_the_fastest_within_the_budget(speedups, metrics, full, drop, expected):
    assert choose(speedups, metrics, full, drop) == expected


def hand_made_logits():
    """4 rows, 3 layers, 2 classes: row 0 confident from layer 1, rows 1-2 from layer 2, row 3 never."""
    layer = lambda *rows: [[x, -x] for x in rows]  # noqa: E731
    return np.array([layer(5, 0.1, 0.2, 0.1), layer(5, 5, -5, 0.1), layer(5, 5, -5, -0.3)], dtype=np.float32)


def test_tune_chooses_and_falls_back_to_full_depth():
    task = custom_task(["no", "yes"])
    logits, labels = hand_made_logits(), [0, 0, 1, 1]  # full depth: argmax of layer 3 = [0, 0, 1, 1]: acc 1.0
    confident = Candidate(ExitRule("confidence", 0.99))  # row 0 at 1, rows 1-2 at 2, row 3 at 3: acc 1.0
    early = Candidate(ExitRule("layer", 1))  # everything at layer 1: acc 0.5
    result = tune(logits, labels, task, 0.5, [early, confident])
    assert result.full.metrics["acc"] == 1.0 and result.chosen.candidate == confident
    assert result.chosen.avg_exit_layer == 2.0 and result.chosen.layer_speedup == 1.5
    assert tune(logits, labels, task, 60.0, [early, confident]).chosen.candidate == early  # 50 points allowed
    nothing = tune(logits, labels, task, 0.5, [early])
    assert nothing.chosen_index is None and nothing.chosen.candidate.is_full_depth
    table = json.loads(json.dumps(result.to_dict()))  # what tuning.json holds
    assert table["chosen"]["exit_rule"] == "confidence:0.99" and table["candidates"][0]["within_drop"] is False


def test_old_pabee_config_loads_and_a_patience_rule_has_one_spelling(tmp_path):
    old = {"classifier_dropout": None, "loss_weighting": "linear", "pabee_version": "0.1.0", "patience": 3,
           "pooling": "mean", "regression_threshold": 0.1}  # as pabee wrote it before exit_rule existed
    (tmp_path / "pabee_config.json").write_text(json.dumps(old))
    config = PabeeConfig.load(tmp_path)
    assert config.exit_rule is None and default_exit_rule(config) == ExitRule("patience", 3)
    assert PabeeConfig(exit_rule="patience:2").patience == 2 and PabeeConfig(exit_rule="patience:2").exit_rule is None
    assert default_exit_rule(PabeeConfig(patience=4, exit_rule="entropy:0.3")) == ExitRule("entropy", 0.3)
    (tmp_path / "pabee_config.json").write_text(json.dumps({**old, "exit_rule": "entropy:-1"}))
    with pytest.raises(ValueError, match="pabee_config.json: the entropy threshold must be >= 0"):
        PabeeConfig.load(tmp_path)


def test_a_saved_probability_rule_is_refused_for_a_regression_model(tmp_path):
    with pytest.raises(ValueError, match="needs class probabilities"):
        PabeeForSequenceClassification(tiny_backbone("bert", 1), PabeeConfig(exit_rule="entropy:0.2"))


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    """A tiny run folder tuned onto an entropy rule (through save_tuning, as pabee tune saves it)."""
    folder = save_tiny_run(tmp_path_factory.mktemp("tuned") / "run", patience=2)
    model = PabeeForSequenceClassification.from_pretrained(folder)
    features = random_features(30, 3, seed=4, vocab=model.config.vocab_size)
    rule = ExitRule("entropy", 0.9 * math.log(3))
    result = tune(all_layer_logits(model, features), features.labels, custom_task(["sad", "happy", "meh"]), 100.0,
                  [Candidate(rule)])
    assert result.chosen.candidate.rule == rule, "the budget allows anything faster"
    save_tuning(folder, result)
    return folder, rule


def test_the_saved_rule_is_the_forward_default(tuned_run):
    folder, rule = tuned_run
    saved = json.loads((folder / "pabee_config.json").read_text())
    assert saved["exit_rule"] == str(rule) and saved["patience"] == 2
    assert json.loads((folder / "tuning.json").read_text())["saved_default"] == str(rule)
    model = PabeeForSequenceClassification.from_pretrained(folder)
    ids, mask = run_batch(folder, seed=3)
    with torch.no_grad():
        default, explicit = model(ids, attention_mask=mask), model(ids, attention_mask=mask, exit_rule=rule)
        patience = model(ids, attention_mask=mask, patience=2)
    assert torch.equal(default.exit_layers, explicit.exit_layers) and torch.equal(default.logits, explicit.logits)
    assert not torch.equal(default.exit_layers, patience.exit_layers)
    # asking for a default patience at load time replaces the saved rule
    assert default_exit_rule(PabeeForSequenceClassification.from_pretrained(folder, patience=1).pabee_config) == \
        ExitRule("patience", 1)


def test_predictor_serve_and_pipeline_use_the_saved_rule(tuned_run):
    import asyncio

    import httpx
    from transformers import pipeline

    from pabee.predictor import Predictor
    from pabee.serving import ServeSettings, create_app

    folder, rule = tuned_run
    predictor = Predictor.from_pretrained(folder)
    assert predictor.exit_rule == rule and predictor.describe()["exit_rule"] == str(rule)

    async def info():
        app = create_app(predictor, ServeSettings())
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://pabee.test") as client:
                return (await client.get("/info")).json()

    assert asyncio.run(info())["exit_rule"] == str(rule)
    texts = ["good movie", "the cat sat on the mat.", "bad plot, slow and sad!"]
    classify = pipeline("text-classification", model=str(folder), top_k=None)
    by_predictor = predictor.predict(texts)
    for answer, expected in zip(classify(texts), by_predictor):
        assert {a["label"]: a["score"] for a in answer} == pytest.approx(expected.probabilities, abs=1e-5)


def test_onnx_export_carries_the_saved_rule(tuned_run, tmp_path):
    from pabee.onnx import PabeeOnnxModel
    from pabee.onnx.export import export_onnx
    from pabee.predictor import Predictor

    folder, rule = tuned_run
    out = export_onnx(folder, tmp_path / "onnx")
    manifest = json.loads((out / "pabee_onnx.json").read_text())
    assert manifest["pabee_config"]["exit_rule"] == str(rule) and manifest["default_exit_rule"] == str(rule)
    runtime = PabeeOnnxModel.from_pretrained(out)
    assert runtime.default_exit_rule == rule
    ids, mask = run_batch(folder, seed=5)
    model = PabeeForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        reference = model(ids, attention_mask=mask)
    answer = runtime(ids.numpy(), attention_mask=mask.numpy(), token_type_ids=np.zeros_like(ids.numpy()))
    assert answer.exit_layers.tolist() == reference.exit_layers.tolist()
    assert Predictor.from_pretrained(out, backend="onnx").exit_rule == rule


def examples(n: int) -> list[Example]:
    return [Example(f"train-{i}", f"text {i}", None, str(i % 2)) for i in range(n)]


def test_held_out_split_is_disjoint_reproducible_and_checked():
    data = examples(50)
    kept, held = hold_out(data, 0.2, seed=7)
    assert len(held.examples) == 10 and len(kept) == 40
    assert {e.guid for e in kept}.isdisjoint(e.guid for e in held.examples)
    assert {e.guid for e in kept} | {e.guid for e in held.examples} == {e.guid for e in data}
    again_kept, again = hold_out(data, 0.2, seed=7)
    assert again.record == held.record and again_kept == kept
    assert hold_out(data, 0.2, seed=8)[1].record["indices"] != held.record["indices"]
    assert len(hold_out(data, 3, seed=7)[1].examples) == 3
    assert rebuild_holdout(held.record, data) == held.examples
    changed = list(data)
    changed[held.record["indices"][0]] = Example("train-x", "another text", None, "0")
    with pytest.raises(ValueError, match="training data changed"):
        rebuild_holdout(held.record, changed)
    with pytest.raises(ValueError, match="training data changed"):
        rebuild_holdout(held.record, data[:5])
    for bad in (50, 0, 1.0, -0.1, True):
        with pytest.raises(ValueError, match="--tune_split"):
            holdout_size(bad, 50)
