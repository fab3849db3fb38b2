"""Entropy, confidence and fixed-layer exit rules inside PabeeForSequenceClassification, on tiny random encoders:
the layer-by-layer inference must reproduce the rule recomputed from all layers' logits, at every batch size."""

import pytest
import torch
from tiny_models import one_at_a_time, random_batch, tiny_backbone

from pabee.config import PabeeConfig
from pabee.exit_rules import ExitRule, max_softmax_probability, rule_exit_layers, softmax_entropy
from pabee.modeling import PabeeForSequenceClassification, gather_exit_logits

ATOL = 1e-5
RULE_ARCHS = ["bert", "albert", "distilbert"]


def make_model(arch, num_labels=3, **pabee):
    """A tiny model whose classifiers have large weights, so that class probabilities spread out (with the default
    initialisation every layer predicts close to uniform and a threshold rule would exit all rows together)."""
    model = PabeeForSequenceClassification(tiny_backbone(arch, num_labels), PabeeConfig(**pabee))
    torch.manual_seed(3)
    for head in model.classifiers:
        torch.nn.init.normal_(head.weight, std=1.0)
    return model


def thresholds_between_observed_values(values: torch.Tensor, quantiles=(0.25, 0.5, 0.75)) -> list[float]:
    """Thresholds halfway between two neighbouring observed values, so that no value sits on a threshold and
    the tiny differences between batched and single-row arithmetic cannot flip a comparison."""
    ordered = values.flatten().sort().values
    out = []
    for q in quantiles:
        i = int(q * (ordered.numel() - 1))
        out.append(float((ordered[i] + ordered[i + 1]) / 2))
    return out


def threshold_rules(model, ids, mask) -> list[ExitRule]:
    with torch.no_grad():
        all_logits = model(ids, attention_mask=mask, output_all_layers=True).all_logits[:-1]
    entropies = thresholds_between_observed_values(torch.from_numpy(softmax_entropy(all_logits.numpy())))
    confidences = thresholds_between_observed_values(torch.from_numpy(max_softmax_probability(all_logits.numpy())))
    return [ExitRule("entropy", t) for t in entropies] + [ExitRule("confidence", t) for t in confidences]


@pytest.mark.parametrize("arch", RULE_ARCHS)
def test_threshold_rules_batched_equal_one_at_a_time_and_the_reference(arch):
    model = make_model(arch)
    ids, mask = random_batch(batch=8, max_len=14)
    rules = threshold_rules(model, ids, mask)
    for kind in ("entropy", "confidence"):
        seen_exits = set()
        with torch.no_grad():
            for rule in (r for r in rules if r.kind == kind):
                full = model(ids, attention_mask=mask, exit_rule=rule, output_all_layers=True)
                expected = torch.from_numpy(rule_exit_layers(full.all_logits.numpy(), rule))
                assert full.exit_layers.tolist() == expected.tolist()
                batched = model(ids, attention_mask=mask, exit_rule=rule)
                assert batched.exit_layers.tolist() == expected.tolist(), rule
                torch.testing.assert_close(batched.logits, gather_exit_logits(full.all_logits, expected), atol=ATOL, rtol=0)
                alone_logits, alone_exits = one_at_a_time(model, ids, mask, exit_rule=rule)
                assert alone_exits.tolist() == expected.tolist(), rule
                torch.testing.assert_close(alone_logits, batched.logits, atol=ATOL, rtol=0)
                seen_exits.update(expected.tolist())
        assert len(seen_exits) > 2, f"{kind}: the test must exercise rows leaving at different layers"


@pytest.mark.parametrize("arch", RULE_ARCHS)
def test_hybrid_rule_batched_equals_one_at_a_time_and_the_reference(arch):
    model = make_model(arch)
    ids, mask = random_batch(batch=16, max_len=14, seed=5)
    with torch.no_grad():
        all_logits = model(ids, attention_mask=mask, output_all_layers=True).all_logits
    confidences = thresholds_between_observed_values(
        torch.from_numpy(max_softmax_probability(all_logits[:-1].numpy())), quantiles=(0.05, 0.3, 0.5))
    seen_exits = set()
    with torch.no_grad():
        for rule in [ExitRule("hybrid", p, c) for p in (1, 2) for c in confidences]:
            expected = rule_exit_layers(all_logits.numpy(), rule)
            recomputed = model(ids, attention_mask=mask, exit_rule=rule, output_all_layers=True)
            assert recomputed.exit_layers.tolist() == expected.tolist(), rule
            batched = model(ids, attention_mask=mask, exit_rule=rule)
            assert batched.exit_layers.tolist() == expected.tolist(), rule
            torch.testing.assert_close(batched.logits, gather_exit_logits(all_logits, torch.from_numpy(expected)),
                                       atol=ATOL, rtol=0)
            alone_logits, alone_exits = one_at_a_time(model, ids, mask, exit_rule=str(rule))
            assert alone_exits.tolist() == expected.tolist(), rule
            torch.testing.assert_close(alone_logits, batched.logits, atol=ATOL, rtol=0)
            seen_exits.update(expected.tolist())
    assert len(seen_exits) > 2, "the test must exercise rows leaving at different layers"


@pytest.mark.parametrize("arch", ["bert", "albert"])
@pytest.mark.parametrize("batch_size", [2, 3, 5])
def test_threshold_rules_give_the_same_answers_at_every_batch_size(arch, batch_size):
    model = make_model(arch)
    ids, mask = random_batch(batch=10, max_len=11, seed=7)
    for rule in threshold_rules(model, ids, mask)[1::3]:  # the median entropy and confidence thresholds
        with torch.no_grad():
            full = model(ids, attention_mask=mask, exit_rule=rule)
            parts = [
                model(ids[s : s + batch_size], attention_mask=mask[s : s + batch_size], exit_rule=rule)
                for s in range(0, ids.size(0), batch_size)
            ]
        assert torch.cat([p.exit_layers for p in parts]).tolist() == full.exit_layers.tolist()
        torch.testing.assert_close(torch.cat([p.logits for p in parts]), full.logits, atol=ATOL, rtol=0)


def test_extreme_thresholds_exit_at_the_first_or_the_last_layer():
    model = make_model("bert")
    ids, mask = random_batch(batch=6)
    L = model.num_layers
    with torch.no_grad():
        all_logits = model(ids, attention_mask=mask, output_all_layers=True).all_logits
        for rule, layer in [("entropy:0", L), ("entropy:100", 1), ("confidence:1.0", L), ("confidence:0.01", 1)]:
            out = model(ids, attention_mask=mask, exit_rule=rule)
            assert out.exit_layers.tolist() == [layer] * 6, rule
            torch.testing.assert_close(out.logits, all_logits[layer - 1], atol=ATOL, rtol=0)
            alone_logits, alone_exits = one_at_a_time(model, ids, mask, exit_rule=rule)
            assert alone_exits.tolist() == [layer] * 6, rule


@pytest.mark.parametrize("arch", RULE_ARCHS)
def test_fixed_layer_runs_k_layers_and_uses_classifier_k(arch):
    model = make_model(arch)
    ids, mask = random_batch(batch=6)
    L = model.num_layers
    with torch.no_grad():
        all_logits = model(ids, attention_mask=mask, output_all_layers=True).all_logits
        for k in range(1, L + 3):
            depth = min(k, L)
            out = model(ids, attention_mask=mask, exit_rule=ExitRule("layer", k))
            assert out.exit_layers.tolist() == [depth] * 6
            assert out.exit_layers.dtype == torch.long
            torch.testing.assert_close(out.logits, all_logits[depth - 1], atol=ATOL, rtol=0)
            alone_logits, alone_exits = one_at_a_time(model, ids, mask, exit_rule=f"layer:{k}")
            assert alone_exits.tolist() == [depth] * 6
            torch.testing.assert_close(alone_logits, out.logits, atol=ATOL, rtol=0)
            recomputed = model(ids, attention_mask=mask, exit_rule=ExitRule("layer", k), output_all_layers=True)
            assert recomputed.exit_layers.tolist() == [depth] * 6


def test_fixed_layer_classifies_once():
    model = make_model("bert")
    ids, mask = random_batch(batch=4)
    calls = []
    original = model._classify
    heads = list(model.classifiers)
    model._classify = lambda head, *a: calls.append(heads.index(head)) or original(head, *a)
    with torch.no_grad():
        model(ids, attention_mask=mask, exit_rule="layer:2")
        model(ids[:1], attention_mask=mask[:1], exit_rule="layer:2")
    assert calls == [1, 1]  # classifier 2 (index 1) only, once per call


@pytest.mark.parametrize("arch", ["bert", "albert"])
def test_patience_as_an_exit_rule_is_the_patience_argument(arch):
    model = make_model(arch)
    ids, mask = random_batch(batch=8)
    with torch.no_grad():
        for patience in (0, 1, 2):
            a = model(ids, attention_mask=mask, patience=patience)
            b = model(ids, attention_mask=mask, exit_rule=ExitRule("patience", patience))
            c = model(ids, attention_mask=mask, exit_rule=f"patience:{patience}")
            assert a.exit_layers.tolist() == b.exit_layers.tolist() == c.exit_layers.tolist()
            assert torch.equal(a.logits, b.logits) and torch.equal(a.logits, c.logits)


def test_training_and_labels_paths_recompute_exits_with_the_rule():
    model = make_model("bert")
    ids, mask = random_batch(batch=6)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    model.train()
    for rule in threshold_rules(model.eval(), ids, mask)[::2] + [ExitRule("layer", 2)]:
        model.train()
        out = model(ids, attention_mask=mask, labels=labels, exit_rule=rule, output_all_layers=True)
        assert out.loss is not None
        expected = torch.from_numpy(rule_exit_layers(out.all_logits.detach().numpy(), rule))
        assert out.exit_layers.tolist() == expected.tolist()
        torch.testing.assert_close(out.logits, gather_exit_logits(out.all_logits, expected))


def test_regression_model_rejects_entropy_and_confidence():
    model = make_model("bert", num_labels=1)
    ids, mask = random_batch()
    for rule in ("entropy:0.3", ExitRule("confidence", 0.9)):
        name = rule.split(":")[0] if isinstance(rule, str) else rule.kind
        with pytest.raises(ValueError, match=f"{name} exit rule .*classification"):
            model(ids, attention_mask=mask, exit_rule=rule)
        with pytest.raises(ValueError, match=f"{name} exit rule"):
            model(ids, attention_mask=mask, exit_rule=rule, output_all_layers=True)
    with torch.no_grad():
        assert model(ids, attention_mask=mask, exit_rule="layer:3").exit_layers.tolist() == [3] * ids.size(0)
        out = model(ids, attention_mask=mask, exit_rule="patience:1", regression_threshold=100.0)
        assert out.exit_layers.tolist() == [2] * ids.size(0)


def test_bad_exit_rule_arguments():
    model = make_model("bert")
    ids, mask = random_batch()
    with pytest.raises(ValueError, match="either exit_rule or patience"):
        model(ids, attention_mask=mask, patience=2, exit_rule="entropy:0.3")
    with pytest.raises(ValueError, match="unknown exit rule"):
        model(ids, attention_mask=mask, exit_rule="depth:2")
    with pytest.raises(ValueError, match="confidence"):
        model(ids, attention_mask=mask, exit_rule="confidence:2")
    with pytest.raises(TypeError, match="exit_rule"):
        model(ids, attention_mask=mask, exit_rule=0.3)
