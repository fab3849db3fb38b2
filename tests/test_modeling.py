"""Equivalence tests of PabeeForSequenceClassification on tiny random encoders of every architecture."""

import numpy as np
import pytest
import torch
from tiny_models import ARCHS, one_at_a_time, random_batch, tiny_backbone

from pabee.exit_rules import PatienceRule
from pabee.losses import layer_loss_weights
from pabee.modeling import PabeeForSequenceClassification, PabeeOutput, gather_exit_logits

ATOL = 1e-5


def make_model(arch, num_labels=3, seed=0, **pabee):
    from pabee.config import PabeeConfig

    return PabeeForSequenceClassification(tiny_backbone(arch, num_labels, seed=seed), PabeeConfig(**pabee))


@pytest.mark.parametrize("arch", ARCHS)
def test_driver_reproduces_the_plain_backbone(arch):
    model = make_model(arch)
    ids, mask = random_batch()
    with torch.no_grad():
        plain = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = model.encode(ids, mask)
    for r in range(ids.size(0)):
        n = int(mask[r].sum())
        torch.testing.assert_close(ours[r, :n], plain[r, :n], atol=ATOL, rtol=0)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("arch", ARCHS)
def test_batched_equals_one_at_a_time(arch, pooling):
    model = make_model(arch, pooling=pooling)
    ids, mask = random_batch(batch=8, max_len=14)
    seen_exits = set()
    with torch.no_grad():
        for patience in (1, 2, 3):
            batched = model(ids, attention_mask=mask, patience=patience)
            alone_logits, alone_exits = one_at_a_time(model, ids, mask, patience=patience)
            assert batched.exit_layers.tolist() == alone_exits.tolist()
            torch.testing.assert_close(batched.logits, alone_logits, atol=ATOL, rtol=0)
            seen_exits.update(batched.exit_layers.tolist())
    assert len(seen_exits) > 1, "the test must exercise rows leaving at different layers"


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("arch", ["bert", "mpnet"])
def test_unpadded_batch_without_a_mask_equals_one_at_a_time(arch, pooling):
    """No padding anywhere: the mask may be omitted or all ones, and rows still leave on their own."""
    model = make_model(arch, pooling=pooling)
    ids, _ = random_batch(batch=8, max_len=10, min_len=10)
    ones = torch.ones_like(ids)
    seen_exits = set()
    with torch.no_grad():
        for patience in (1, 2):
            alone_logits, alone_exits = one_at_a_time(model, ids, ones, patience=patience)
            for mask in (None, ones):
                batched = model(ids, attention_mask=mask, patience=patience)
                assert batched.exit_layers.tolist() == alone_exits.tolist()
                torch.testing.assert_close(batched.logits, alone_logits, atol=ATOL, rtol=0)
                single = model(ids[:1], attention_mask=None if mask is None else mask[:1], patience=patience)
                assert single.exit_layers.tolist() == alone_exits[:1].tolist()
            seen_exits.update(alone_exits.tolist())
    assert len(seen_exits) > 1, "the test must exercise rows leaving at different layers"


@pytest.mark.parametrize("arch", ["bert", "albert", "mpnet"])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 5])
def test_same_answers_at_every_batch_size(arch, batch_size):
    model = make_model(arch)
    ids, mask = random_batch(batch=10, max_len=11, seed=7)
    with torch.no_grad():
        full = model(ids, attention_mask=mask, patience=2)
        parts = [
            model(ids[s : s + batch_size], attention_mask=mask[s : s + batch_size], patience=2)
            for s in range(0, ids.size(0), batch_size)
        ]
    assert torch.cat([p.exit_layers for p in parts]).tolist() == full.exit_layers.tolist()
    torch.testing.assert_close(torch.cat([p.logits for p in parts]), full.logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_extra_padding_never_changes_an_answer(pooling):
    model = make_model("bert", pooling=pooling)
    ids, mask = random_batch(batch=5, max_len=9)
    padded_ids = torch.cat([ids, torch.ones(5, 20, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(5, 20, dtype=torch.long)], dim=1)
    with torch.no_grad():
        a = model(ids, attention_mask=mask, patience=1)
        b = model(padded_ids, attention_mask=padded_mask, patience=1)
    assert a.exit_layers.tolist() == b.exit_layers.tolist()
    torch.testing.assert_close(a.logits, b.logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_early_exit_agrees_with_rule_recomputed_from_all_logits(arch):
    model = make_model(arch)
    ids, mask = random_batch(batch=8)
    with torch.no_grad():
        for patience in (1, 2, 3):
            full = model(ids, attention_mask=mask, patience=patience, output_all_layers=True)
            assert full.all_logits.shape == (model.num_layers, 8, 3)
            expected_exits = torch.from_numpy(PatienceRule(patience, 0.1).exit_layers(full.all_logits.numpy()))
            assert full.exit_layers.tolist() == expected_exits.tolist()
            early = model(ids, attention_mask=mask, patience=patience)
            assert early.exit_layers.tolist() == expected_exits.tolist()
            torch.testing.assert_close(early.logits, gather_exit_logits(full.all_logits, expected_exits), atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch", ["bert", "albert", "distilbert"])
def test_patience_zero_and_large_patience_use_the_last_classifier(arch):
    model = make_model(arch)
    ids, mask = random_batch()
    with torch.no_grad():
        hidden = model.encode(ids, mask)
        last = model._classify(model.classifiers[-1], hidden, model._pool_input(hidden, mask))
        for patience in (0, model.num_layers, model.num_layers + 5):
            out = model(ids, attention_mask=mask, patience=patience)
            assert out.exit_layers.tolist() == [model.num_layers] * ids.size(0)
            torch.testing.assert_close(out.logits, last, atol=ATOL, rtol=0)


def test_patience_defaults_to_the_config_and_can_be_overridden():
    model = make_model("bert", patience=1)
    ids, mask = random_batch(batch=8)
    with torch.no_grad():
        default = model(ids, attention_mask=mask)
        explicit = model(ids, attention_mask=mask, patience=1)
        full = model(ids, attention_mask=mask, patience=0)
    assert default.exit_layers.tolist() == explicit.exit_layers.tolist()
    assert min(default.exit_layers.tolist()) < model.num_layers
    assert full.exit_layers.tolist() == [model.num_layers] * 8


def test_loss_is_the_layer_weighted_sum():
    model = make_model("bert")
    ids, mask = random_batch()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    out = model(ids, attention_mask=mask, labels=labels, output_all_layers=True)
    per_layer = torch.stack([torch.nn.functional.cross_entropy(lg, labels) for lg in out.all_logits])
    L = model.num_layers
    expected = sum((i + 1) * per_layer[i] for i in range(L)) / (L * (L + 1) / 2)
    torch.testing.assert_close(out.loss, expected)
    assert torch.allclose(model.loss_weights, layer_loss_weights(L))
    out.loss.backward()
    assert all(head.weight.grad is not None for head in model.classifiers)


def test_training_mode_runs_every_layer_for_every_row():
    model = make_model("bert", patience=1)
    model.train()
    ids, mask = random_batch()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    out = model(ids, attention_mask=mask, labels=labels)
    assert out.loss is not None and out.loss.requires_grad
    assert out.logits.shape == (6, 3)


def test_regression_model_uses_mse_and_threshold():
    model = make_model("bert", num_labels=1)
    ids, mask = random_batch(batch=8)
    labels = torch.linspace(0, 5, 8)
    with torch.no_grad():
        out = model(ids, attention_mask=mask, labels=labels, output_all_layers=True)
        per_layer = torch.stack([torch.nn.functional.mse_loss(lg[:, 0], labels) for lg in out.all_logits])
        weights = layer_loss_weights(model.num_layers)
        torch.testing.assert_close(out.loss, (per_layer * weights).sum())
        never = model(ids, attention_mask=mask, patience=1, regression_threshold=0.0)
        assert never.exit_layers.tolist() == [model.num_layers] * 8  # |delta| < 0 is never true
        for threshold in (1e-3, 1.0, 100.0):
            batched = model(ids, attention_mask=mask, patience=2, regression_threshold=threshold)
            alone_logits, alone_exits = one_at_a_time(model, ids, mask, patience=2, regression_threshold=threshold)
            assert batched.exit_layers.tolist() == alone_exits.tolist()
            torch.testing.assert_close(batched.logits, alone_logits, atol=ATOL, rtol=0)
        always = model(ids, attention_mask=mask, patience=1, regression_threshold=100.0)
        assert always.exit_layers.tolist() == [2] * 8


@pytest.mark.parametrize("arch,pooling", [("bert", "cls"), ("albert", "cls"), ("mpnet", "mean"), ("distilbert", "cls"), ("distilbert", "mean")])
def test_save_then_load_gives_the_same_predictions(arch, pooling, tmp_path):
    model = make_model(arch, patience=2, regression_threshold=0.3, pooling=pooling)
    model.config.id2label = {0: "a", 1: "b", 2: "c"}
    model.config.label2id = {"a": 0, "b": 1, "c": 2}
    model.save_pretrained(tmp_path)
    loaded = PabeeForSequenceClassification.from_pretrained(tmp_path)
    assert not loaded.training
    assert loaded.pabee_config.patience == 2 and loaded.pabee_config.regression_threshold == 0.3
    assert loaded.pabee_config.pooling == pooling
    assert loaded.num_labels == 3 and loaded.config.id2label == {0: "a", 1: "b", 2: "c"}
    ids, mask = random_batch(batch=8)
    with torch.no_grad():
        for patience in (None, 0, 1):
            a = model(ids, attention_mask=mask, patience=patience)
            b = loaded(ids, attention_mask=mask, patience=patience)
            assert a.exit_layers.tolist() == b.exit_layers.tolist()
            torch.testing.assert_close(a.logits, b.logits, atol=0, rtol=0)
    overridden = PabeeForSequenceClassification.from_pretrained(tmp_path, patience=5)
    assert overridden.pabee_config.patience == 5
    assert not list(tmp_path.glob(".*tmp*")), "no temporary files are left behind"


def test_load_plain_checkpoint_adds_fresh_classifiers(tmp_path):
    backbone = tiny_backbone("bert")
    backbone.save_pretrained(tmp_path)
    model = PabeeForSequenceClassification.from_pretrained(tmp_path, num_labels=2, patience=3)
    assert not model.training and model.num_labels == 2 and len(model.classifiers) == 4
    assert model.pabee_config.patience == 3
    ids, mask = random_batch()
    with torch.no_grad():
        torch.testing.assert_close(
            model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state,
            backbone(input_ids=ids, attention_mask=mask).last_hidden_state,
        )


def test_mean_pooling_classifies_the_masked_mean_of_each_layer():
    model = make_model("bert", pooling="mean")
    ids, mask = random_batch(batch=5)
    with torch.no_grad():
        out = model(ids, attention_mask=mask, output_all_layers=True)
        states = model.backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for i in range(model.num_layers):
        w = mask.unsqueeze(-1).float()
        pooled = (states[i + 1] * w).sum(1) / w.sum(1)  # hand-written masked mean of layer i+1
        expected = pooled @ model.classifiers[i].weight.T + model.classifiers[i].bias
        torch.testing.assert_close(out.all_logits[i], expected, atol=ATOL, rtol=0)
    assert model.pooler is None
    # unpadded rows without a mask give the plain mean; the training path's pooling (from the mask itself)
    # classifies a padded batch as the inference path's averaging weights do
    with torch.no_grad():
        last = model.backbone(input_ids=ids).last_hidden_state
        expected = last.mean(1) @ model.classifiers[-1].weight.T + model.classifiers[-1].bias
        torch.testing.assert_close(model(ids, patience=0).logits, expected, atol=ATOL, rtol=0)
        hidden = model.encode(ids, mask)
        weights = model._pool_input(hidden, mask)
        assert weights.shape == (5, 1, ids.size(1))
        torch.testing.assert_close(weights.sum(-1), torch.ones(5, 1))
        by_weights = model._classify(model.classifiers[-1], hidden, weights)
        by_mask = model._classify(model.classifiers[-1], hidden, mask)
    torch.testing.assert_close(by_weights, by_mask, atol=ATOL, rtol=0)
    torch.testing.assert_close(by_weights, out.all_logits[-1], atol=ATOL, rtol=0)


def test_sentence_transformers_folder_gets_its_declared_pooling(tmp_path):
    import json

    tiny_backbone("bert").save_pretrained(tmp_path)
    plain = PabeeForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    assert plain.pabee_config.pooling == "cls"
    (tmp_path / "modules.json").write_text(
        json.dumps([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    )
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True})
    )
    assert PabeeForSequenceClassification.from_pretrained(tmp_path, num_labels=2).pabee_config.pooling == "mean"
    forced = PabeeForSequenceClassification.from_pretrained(tmp_path, num_labels=2, pooling="cls")
    assert forced.pabee_config.pooling == "cls"
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        PabeeForSequenceClassification.from_pretrained(tmp_path, num_labels=2, pooling="max")


def test_num_labels_contradicting_a_saved_model(tmp_path):
    make_model("bert").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="contradicts the saved model"):
        PabeeForSequenceClassification.from_pretrained(tmp_path, num_labels=5)


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=50, n_positions=16)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"unsupported architecture 'gpt2'.*albert.*bert.*mpnet"):
        PabeeForSequenceClassification.from_pretrained(tmp_path, num_labels=2)


def test_missing_checkpoint_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="model folder not found: .*nope"):
        PabeeForSequenceClassification.from_pretrained(str(tmp_path / "nope"), num_labels=2)


def test_bad_inputs_are_rejected():
    model = make_model("bert")
    ids, mask = random_batch()
    with pytest.raises(ValueError, match="empty batch"):
        model(ids[:0], attention_mask=mask[:0])
    with pytest.raises(ValueError, match="non-negative"):
        model(ids, attention_mask=mask, patience=-1)
    with pytest.raises(TypeError, match="patience"):
        model(ids, attention_mask=mask, patience=1.5)
    with pytest.raises(ValueError, match="regression_threshold"):
        model(ids, attention_mask=mask, regression_threshold=-0.5)
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(ids, attention_mask=mask[:, :3])
    with pytest.raises(TypeError, match="input_ids"):
        model(ids[0])
    with pytest.raises(ValueError, match="num_labels"):
        PabeeForSequenceClassification.from_pretrained("anything", num_labels=0)


def test_patience_agreement_follows_torch_argmax_on_ties_infinities_and_nan():
    """The patience rule compares numpy argmaxes: they must pick the class torch.argmax picks (the first maximum,
    NaN counting as the maximum), or a model's exits would depend on which library decided."""
    from pabee.exit_rules import predictions_agree

    nan, inf = float("nan"), float("inf")
    rows = [[0.3], [1.0, 1.0], [0.0, 2.0, 2.0], [-inf, -inf], [1.0, nan, 3.0], [nan, nan], [inf, nan], [2.0, inf, inf],
            [0.1, -0.2, 0.05]]
    gen = torch.Generator().manual_seed(0)
    rows += torch.randn(200, 4, generator=gen).round(decimals=1).tolist()  # rounding makes ties common
    for row in rows:
        logits = torch.tensor([row])
        picked = int(logits[0].argmax())
        for j in range(len(row)):
            one_hot = np.zeros((1, len(row)), dtype=np.float32)
            one_hot[0, j] = 1.0
            if len(row) > 1:  # one column is a regression: compared by value, not argmax
                assert bool(predictions_agree(logits.numpy(), one_hot, 0.1)[0]) == (j == picked), row


def test_inference_output_is_the_same_model_output_as_the_dataclass_builds():
    logits, exits = torch.randn(3, 2), torch.tensor([1, 4, 2])
    fast = PabeeOutput._of_inference(logits, exits)
    built = PabeeOutput(logits=logits, exit_layers=exits)
    assert list(fast.items()) == list(built.items()) and list(fast.keys()) == ["logits", "exit_layers"]
    assert vars(fast) == vars(built) and fast.loss is None and fast.all_logits is None
    assert fast[0] is logits and fast["exit_layers"] is exits and fast.to_tuple() == built.to_tuple()
    # what accelerate / the Trainer do with outputs: rebuild from a mapping, set a field afterwards
    rebuilt = type(fast)(dict(fast.items()))
    assert list(rebuilt.items()) == list(built.items())
    fast.loss = torch.tensor(0.5)
    assert fast["loss"] is fast.loss and list(fast.keys()) == ["logits", "exit_layers", "loss"]


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_every_row_shares_is_trimmed_and_changes_nothing(pooling):
    # rows of one length padded further to a fixed width (padding="max_length"): after trimming nothing is padded
    model = make_model("bert", pooling=pooling)
    ids = torch.randint(5, 50, (3, 7))
    padded_ids = torch.cat([ids, torch.zeros(3, 5, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([torch.ones(3, 7, dtype=torch.long), torch.zeros(3, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        for rule in ("patience:0", "patience:1", "patience:2", "layer:2"):
            plain = model(ids, exit_rule=rule)
            padded = model(padded_ids, attention_mask=padded_mask, exit_rule=rule)
            assert padded.exit_layers.tolist() == plain.exit_layers.tolist()
            torch.testing.assert_close(padded.logits, plain.logits, atol=ATOL, rtol=0)
