"""Self-distillation from the last classifier (``distillation_alpha`` / ``distillation_temperature``): the loss
against hand computations, alpha 0 = the PABEE loss exactly, no gradient into the teacher, the settings' checks, and
a tiny training run that saves and reloads the setting."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from fixtures import write_glue_task
from tiny_models import random_batch, tiny_backbone

from pabee.cli import main
from pabee.config import PABEE_CONFIG_NAME, PabeeConfig
from pabee.losses import (
    distillation_loss,
    distilled_layer_loss,
    layer_loss_weights,
    weighted_layer_loss,
)
from pabee.modeling import PabeeForSequenceClassification


def test_classification_loss_equals_a_hand_computation():
    # L=2, one row, label 0, T=2. Student z1 = (0, 0): softmax(z1/T) = (1/2, 1/2); teacher z2 = (ln 9, 0):
    # softmax(z2/T) = (3/4, 1/4), softmax(z2) = (9/10, 1/10).
    # KD_1 = T^2 * KL((3/4, 1/4) || (1/2, 1/2)) = 4 * (3/4 ln(3/2) + 1/4 ln(1/2)); CE_1 = ln 2; CE_2 = -ln(9/10).
    all_logits = torch.tensor([[[0.0, 0.0]], [[math.log(9), 0.0]]])  # (L=2, B=1, C=2)
    labels = torch.tensor([0])
    kd1 = 4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    ce1, ce2 = math.log(2), -math.log(0.9)
    for alpha in (0.25, 0.5, 1.0):
        expected = (1 / 3) * ((1 - alpha) * ce1 + alpha * kd1) + (2 / 3) * ce2  # linear weights 1/3, 2/3
        got = distilled_layer_loss(all_logits, labels, layer_loss_weights(2), alpha, 2.0)
        assert got.item() == pytest.approx(expected, rel=1e-6), alpha
    assert distillation_loss(all_logits[0], all_logits[1], 2.0).item() == pytest.approx(kd1, rel=1e-6)
    # T = 1: plain KL((9/10, 1/10) || (1/2, 1/2)), no scaling
    kl = 0.9 * math.log(1.8) + 0.1 * math.log(0.2)
    assert distillation_loss(all_logits[0], all_logits[1], 1.0).item() == pytest.approx(kl, rel=1e-6)


def test_regression_loss_equals_a_hand_computation():
    # L=2, two rows. z1 = (1, 3), z2 = (2, 2), labels (2, 1).
    # MSE_1 = (1 + 4) / 2 = 2.5; MSE_2 = (0 + 1) / 2 = 0.5; KD_1 = mean squared distance to z2 = (1 + 1) / 2 = 1.
    all_logits = torch.tensor([[[1.0], [3.0]], [[2.0], [2.0]]])  # (L=2, B=2, C=1)
    labels = torch.tensor([2.0, 1.0])
    got = distilled_layer_loss(all_logits, labels, layer_loss_weights(2), 0.5, 2.0)  # T: unused for regression
    assert got.item() == pytest.approx((1 / 3) * (0.5 * 2.5 + 0.5 * 1.0) + (2 / 3) * 0.5, rel=1e-6)


def test_batch_mean_and_every_layer_match_a_row_by_row_reading():
    torch.manual_seed(1)
    all_logits, labels = torch.randn(4, 5, 3), torch.randint(0, 3, (5,))
    alpha, t = 0.3, 3.0
    weights = layer_loss_weights(4)
    total = 0.0
    for i in range(4):
        ce = sum(-F.log_softmax(all_logits[i, b], -1)[labels[b]] for b in range(5)) / 5
        if i == 3:
            total += weights[i] * ce
            continue
        kd = 0.0
        for b in range(5):
            p_t, p_s = F.softmax(all_logits[3, b] / t, -1), F.softmax(all_logits[i, b] / t, -1)
            kd += (p_t * (p_t.log() - p_s.log())).sum() * t**2
        total += weights[i] * ((1 - alpha) * ce + alpha * kd / 5)
    got = distilled_layer_loss(all_logits, labels, weights, alpha, t)
    assert got.item() == pytest.approx(float(total), rel=1e-5)


@pytest.mark.parametrize("num_labels", [1, 3])
def test_alpha_zero_is_the_pabee_loss_exactly(num_labels):
    torch.manual_seed(0)
    all_logits = torch.randn(4, 6, num_labels)
    labels = torch.randn(6) if num_labels == 1 else torch.randint(0, 3, (6,))
    for weighting in ("linear", "uniform", "last"):
        weights = layer_loss_weights(4, weighting)
        assert torch.equal(distilled_layer_loss(all_logits, labels, weights, 0.0, 5.0),
                           weighted_layer_loss(all_logits, labels, weights))
    # and the model's training loss with the default config (alpha 0) is that loss
    model = PabeeForSequenceClassification(tiny_backbone("bert", num_labels=num_labels), PabeeConfig())
    ids, mask = random_batch(batch=6)
    model.train()
    torch.manual_seed(5)
    out = model(ids, attention_mask=mask, labels=labels, output_all_layers=True)
    assert torch.equal(out.loss, weighted_layer_loss(out.all_logits, labels, model.loss_weights))


@pytest.mark.parametrize("num_labels", [1, 3])
def test_no_gradient_reaches_the_last_layer_from_the_distillation_term(num_labels):
    torch.manual_seed(2)
    all_logits = torch.randn(3, 4, num_labels, requires_grad=True)
    labels = torch.randn(4) if num_labels == 1 else torch.randint(0, 3, (4,))
    # the last classifier's own loss weighted 0: the loss reaches z_L only through the KD terms
    loss = distilled_layer_loss(all_logits, labels, torch.tensor([0.5, 0.5, 0.0]), 1.0, 2.0)
    loss.backward()
    assert all_logits.grad[:2].abs().sum() > 0  # the students learn
    assert torch.equal(all_logits.grad[2], torch.zeros_like(all_logits.grad[2]))
    # with the usual weighting the last layer's gradient is that of its own label loss alone
    all_logits.grad = None
    distilled_layer_loss(all_logits, labels, layer_loss_weights(3), 0.7, 2.0).backward()
    plain = all_logits.detach().clone().requires_grad_(True)
    weighted_layer_loss(plain, labels, torch.tensor([0.0, 0.0, 0.5])).backward()
    torch.testing.assert_close(all_logits.grad[2], plain.grad[2])


def test_settings_are_checked_and_saved(tmp_path):
    for kwargs, match in [({"distillation_alpha": 1.5}, r"distillation_alpha must be in \[0, 1\]"),
                          ({"distillation_alpha": -0.1}, "distillation_alpha"),
                          ({"distillation_alpha": float("nan")}, "finite number"),
                          ({"distillation_alpha": True}, "finite number"),
                          ({"distillation_temperature": 0}, "distillation_temperature must be > 0"),
                          ({"distillation_temperature": "2"}, "finite number")]:
        with pytest.raises(ValueError, match=match):
            PabeeConfig(**kwargs)
    with pytest.raises(ValueError, match="distillation_alpha must be in"):
        distilled_layer_loss(torch.zeros(2, 1, 2), torch.tensor([0]), layer_loss_weights(2), 2.0, 1.0)
    PabeeConfig(distillation_alpha=0.5, distillation_temperature=4).save(tmp_path)
    loaded = PabeeConfig.load(tmp_path)
    assert (loaded.distillation_alpha, loaded.distillation_temperature) == (0.5, 4.0)
    # a pabee_config.json written before the option existed loads with it off
    saved = json.loads((tmp_path / PABEE_CONFIG_NAME).read_text())
    old = {k: v for k, v in saved.items() if not k.startswith("distillation")}
    (tmp_path / PABEE_CONFIG_NAME).write_text(json.dumps(old))
    loaded = PabeeConfig.load(tmp_path)
    assert (loaded.distillation_alpha, loaded.distillation_temperature) == (0.0, 2.0)
    (tmp_path / PABEE_CONFIG_NAME).write_text(json.dumps({**old, "distillation_alpha": 3}))
    with pytest.raises(ValueError, match=f"{PABEE_CONFIG_NAME}: distillation_alpha must be in"):
        PabeeConfig.load(tmp_path)


@pytest.mark.parametrize(("flags", "message"), [
    (["--distillation_alpha", "1.5"], "--distillation_alpha must be a finite number >= 0 and <= 1, got 1.5"),
    (["--distillation_alpha", "abc"], "--distillation_alpha: invalid float value: 'abc'"),
    (["--distillation_temperature", "0"], "--distillation_temperature must be a finite number > 0, got 0.0"),
])
def test_bad_command_line_values_are_one_line_errors(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--task_name", "RTE", "--output_dir", str(tmp_path / "out"), *flags])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_a_tiny_training_run_distills_and_saves_the_setting(tiny_bert, tmp_path):
    data = write_glue_task(tmp_path / "glue", "RTE", n=16)

    def train(name: str, *flags: str) -> float:
        args = ["train", "--model_name_or_path", str(tiny_bert), "--task_name", "RTE", "--data_dir", str(data),
                "--output_dir", str(tmp_path / name), "--max_steps", "2", "--per_device_train_batch_size", "8",
                "--no_eval", "--disable_tqdm", *flags]
        assert main(args) == 0
        state = json.loads((tmp_path / name / "trainer_state.json").read_text())
        assert state["global_step"] == 2
        return state["log_history"][-1]["train_loss"]

    plain = train("plain")
    distilled = train("run", "--distillation_alpha", "0.5", "--distillation_temperature", "3")
    assert math.isfinite(distilled) and distilled != plain  # same seed and data: only the loss differs
    out = tmp_path / "run"
    saved = json.loads((out / PABEE_CONFIG_NAME).read_text())
    assert saved["distillation_alpha"] == 0.5 and saved["distillation_temperature"] == 3.0
    assert json.loads((tmp_path / "plain" / PABEE_CONFIG_NAME).read_text())["distillation_alpha"] == 0.0
    model = PabeeForSequenceClassification.from_pretrained(out)
    assert (model.pabee_config.distillation_alpha, model.pabee_config.distillation_temperature) == (0.5, 3.0)
    # the saved setting is what the loaded model trains with, unless overridden when loading
    model.train()
    ids = torch.randint(5, model.config.vocab_size, (4, 7), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 0, 1])
    out_loss = model(ids, labels=labels, output_all_layers=True)
    assert torch.allclose(out_loss.loss, distilled_layer_loss(out_loss.all_logits, labels, model.loss_weights,
                                                              0.5, 3.0))
    assert PabeeForSequenceClassification.from_pretrained(out, distillation_alpha=0.0).pabee_config \
        .distillation_alpha == 0.0


def test_distilling_into_plain_fine_tuning_warns(tiny_bert, tmp_path):
    from pabee.runner import run
    from pabee.settings import RunSettings, TrainSettings

    data = write_glue_task(tmp_path / "glue", "RTE", n=8)
    out = str(tmp_path / "run")
    settings = RunSettings(task_name="RTE", data_dir=str(data), model_name_or_path=str(tiny_bert), output_dir=out,
                           do_train=True, loss_weighting="last", distillation_alpha=0.5, progress=False,
                           train=TrainSettings(output_dir=out, max_steps=1, disable_tqdm=True))
    with pytest.warns(UserWarning, match="--distillation_alpha has no effect with --loss_weighting last"):
        run(settings)
