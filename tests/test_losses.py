"""Layer weighting and the joint loss, tested without a model."""

import pytest
import torch
import torch.nn.functional as F

from pabee.losses import classifier_loss, layer_loss_weights, weighted_layer_loss


def test_linear_weights_are_i_over_sum():
    # L = 4: sum(1..4) = 10 -> 0.1, 0.2, 0.3, 0.4
    assert torch.allclose(layer_loss_weights(4), torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert torch.allclose(layer_loss_weights(1), torch.tensor([1.0]))


def test_uniform_weights():
    assert torch.allclose(layer_loss_weights(5, "uniform"), torch.full((5,), 0.2))


def test_last_weighting_is_plain_fine_tuning():
    assert layer_loss_weights(4, "last").tolist() == [0.0, 0.0, 0.0, 1.0]
    torch.manual_seed(0)
    all_logits = torch.randn(4, 5, 3)
    labels = torch.randint(0, 3, (5,))
    got = weighted_layer_loss(all_logits, labels, layer_loss_weights(4, "last"))
    assert torch.allclose(got, F.cross_entropy(all_logits[-1], labels))


def test_bad_weighting_and_layers():
    with pytest.raises(ValueError, match="unknown loss weighting"):
        layer_loss_weights(3, "cubic")
    with pytest.raises(ValueError):
        layer_loss_weights(0)


def test_classifier_loss_is_cross_entropy_or_mse():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    expected = (F.cross_entropy(logits[:1], labels[:1]) + F.cross_entropy(logits[1:], labels[1:])) / 2
    assert torch.allclose(classifier_loss(logits, labels), expected)
    # regression: ((1.0 - 0.5)^2 + (3.0 - 1.0)^2) / 2 = (0.25 + 4) / 2 = 2.125
    assert classifier_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([0.5, 1.0])).item() == pytest.approx(2.125)


def test_weighted_loss_is_layer_weighted_sum():
    torch.manual_seed(0)
    all_logits = torch.randn(3, 5, 4)
    labels = torch.randint(0, 4, (5,))
    # sum_i i * L_i / sum_i i with i = 1..3 -> (1*L1 + 2*L2 + 3*L3) / 6
    per_layer = [F.cross_entropy(all_logits[i], labels) for i in range(3)]
    expected = (1 * per_layer[0] + 2 * per_layer[1] + 3 * per_layer[2]) / 6
    got = weighted_layer_loss(all_logits, labels, layer_loss_weights(3))
    assert torch.allclose(got, expected)
