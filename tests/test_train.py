"""The training engine's optimizer: internal classifiers get their own learning rate."""

from tiny_models import tiny_backbone
from transformers import TrainingArguments

from pabee.config import PabeeConfig
from pabee.modeling import PabeeForSequenceClassification
from pabee.tasks import get_task
from pabee.train import PabeeTrainer


def _trainer(tmp_path, model, classifier_lr):
    args = TrainingArguments(
        output_dir=str(tmp_path), learning_rate=1e-4, weight_decay=0.01, report_to="none", use_cpu=True
    )
    return PabeeTrainer(model=model, args=args, task=get_task("RTE"), classifier_learning_rate=classifier_lr)


def test_classifiers_get_their_own_learning_rate_and_every_parameter_is_optimized_once(tmp_path):
    model = PabeeForSequenceClassification(tiny_backbone("bert", num_labels=2), PabeeConfig())
    optimizer = _trainer(tmp_path, model, classifier_lr=3e-3).create_optimizer()
    lr_of = {}
    decay_of = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert id(p) not in lr_of, "a parameter is in two groups"
            lr_of[id(p)] = group["lr"]
            decay_of[id(p)] = group["weight_decay"]
    heads = {id(p) for p in model.classifiers.parameters()}
    for name, p in model.named_parameters():
        assert id(p) in lr_of, f"{name} is not optimized"
        assert lr_of[id(p)] == (3e-3 if id(p) in heads else 1e-4), name
    head = model.classifiers[0]
    assert decay_of[id(head.weight)] == 0.01 and decay_of[id(head.bias)] == 0.0  # the Trainer's decay rule is kept


def test_the_scheduler_keeps_the_ratio_between_head_and_backbone_rates(tmp_path):
    model = PabeeForSequenceClassification(tiny_backbone("bert", num_labels=2), PabeeConfig())
    trainer = _trainer(tmp_path, model, classifier_lr=2e-3)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    for _ in range(3):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    rates = sorted({round(g["lr"] / 1e-4, 6) for g in trainer.optimizer.param_groups if g["params"]})
    assert len(rates) == 2 and abs(rates[1] / rates[0] - 20.0) < 1e-6



def test_save_total_limit_keeps_only_the_newest_checkpoints(tmp_path):
    from fixtures import save_tiny_bert, write_glue_task

    from pabee.runner import RunSettings, run
    from pabee.train import TrainSettings

    out = tmp_path / "out"
    settings = TrainSettings(output_dir=str(out), max_steps=3, save_steps=1, save_total_limit=1,
                             per_device_train_batch_size=8, disable_tqdm=True)
    run(RunSettings(output_dir=str(out), task_name="RTE", data_dir=str(write_glue_task(tmp_path, "RTE")),
                    model_name_or_path=str(save_tiny_bert(tmp_path / "tiny")), do_train=True, train=settings))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]


def test_bf16_and_length_grouping_reach_the_trainer_and_train_on_the_cpu(tmp_path):
    import torch
    from fixtures import save_tiny_bert, write_glue_task

    from pabee.runner import RunSettings, run
    from pabee.train import TrainSettings

    out = tmp_path / "out"
    settings = TrainSettings(output_dir=str(out), max_steps=2, save_steps=100, bf16=True,
                             per_device_train_batch_size=8, disable_tqdm=True)
    assert settings.train_sampling_strategy == "group_by_length"  # the default
    run(RunSettings(output_dir=str(out), task_name="RTE", data_dir=str(write_glue_task(tmp_path, "RTE")),
                    model_name_or_path=str(save_tiny_bert(tmp_path / "tiny")), do_train=True, train=settings))
    args = torch.load(out / "training_args.bin", weights_only=False)
    assert args.bf16 and args.train_sampling_strategy == "group_by_length"
    assert (out / "model.safetensors").is_file()


def test_unknown_sampling_strategy_is_refused():
    import pytest

    from pabee.train import TrainSettings

    with pytest.raises(ValueError, match="train_sampling_strategy"):
        TrainSettings(output_dir="x", train_sampling_strategy="sorted")


def test_regression_heads_start_at_the_mean_label_and_only_their_biases_change():
    import pytest
    import torch

    from pabee.train import init_regression_heads

    model = PabeeForSequenceClassification(tiny_backbone("bert", num_labels=1), PabeeConfig())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert init_regression_heads(model, [1.0, 2.0, 3.0, 6.0]) == pytest.approx(3.0)
    for name, value in model.state_dict().items():
        if name.startswith("classifiers.") and name.endswith(".bias"):
            assert torch.equal(value, torch.full_like(value, 3.0)), name
        else:
            assert torch.equal(value, before[name]), name
    with pytest.raises(ValueError, match="at least one"):
        init_regression_heads(model, [])
    classifier = PabeeForSequenceClassification(tiny_backbone("bert", num_labels=2), PabeeConfig())
    with pytest.raises(ValueError, match="regression"):
        init_regression_heads(classifier, [0, 1])
