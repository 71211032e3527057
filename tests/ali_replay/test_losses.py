"""ALI losses against values computed by hand on tiny tensors."""
import math

import pytest
import torch

from ali_replay.losses import cycle_loss, discriminator_loss, generator_loss


def softplus(v):
    return math.log1p(math.exp(v))


REAL = torch.tensor([0.0, 2.0])
FAKE = torch.tensor([-1.0, 1.0])


def test_discriminator_loss_by_hand():
    # -log sigmoid(real) = softplus(-real); -log(1 - sigmoid(fake)) = softplus(fake)
    expected = (softplus(0.0) + softplus(-2.0)) / 2 + (softplus(-1.0) + softplus(1.0)) / 2
    assert discriminator_loss(REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)


def test_generator_loss_swaps_the_labels():
    expected = (softplus(0.0) + softplus(2.0)) / 2 + (softplus(1.0) + softplus(-1.0)) / 2
    assert generator_loss(REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)


def test_losses_equal_binary_cross_entropy_on_probabilities():
    real, fake = torch.randn(7), torch.randn(7)
    bce = torch.nn.functional.binary_cross_entropy
    d = bce(torch.sigmoid(real), torch.ones(7)) + bce(torch.sigmoid(fake), torch.zeros(7))
    assert discriminator_loss(real, fake).item() == pytest.approx(d.item(), rel=1e-5)


def test_weighted_real_term():
    weight = torch.tensor([3.0, 1.0])
    expected = (3 * softplus(0.0) + softplus(-2.0)) / 4 + (softplus(-1.0) + softplus(1.0)) / 2
    assert discriminator_loss(REAL, FAKE, weight).item() == pytest.approx(expected, rel=1e-6)


def test_cycle_loss_is_mean_absolute_error_per_example():
    x = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    recon = torch.tensor([[0.5, 1.0], [0.0, 1.0]])
    # per example: (0.5 + 0)/2 = 0.25 and (0.5 + 0.5)/2 = 0.5
    assert cycle_loss(x, recon).item() == pytest.approx(0.375)
    assert cycle_loss(x, recon, torch.tensor([1.0, 0.0])).item() == pytest.approx(0.25)
