"""The shape-agnostic VAE baseline works with Avalanche's VAE_loss."""
import pytest
import torch
from avalanche.models.generator import VAE_loss

from ali_replay.errors import ShapeError
from strategies.vae import VAE


@pytest.mark.parametrize("shape,arch", [((1, 8, 8), "mlp"), ((1, 28, 28), "conv"), ((3, 32, 32), "conv")])
def test_shapes_and_loss(shape, arch):
    torch.manual_seed(0)
    vae = VAE(shape, latent_dim=4, hidden=32)
    assert vae.arch == arch
    x = torch.rand(5, *shape)
    x_hat, mean, logvar = vae(x)
    assert x_hat.shape == x.shape and mean.shape == logvar.shape == (5, 4)
    loss = VAE_loss(x, (x_hat, mean, logvar))
    loss.backward()
    samples = vae.generate(7)
    assert samples.shape == (7, *shape) and samples.requires_grad is False
    assert 0 <= float(samples.min()) and float(samples.max()) <= 1
    assert vae.generate().shape == shape
    assert vae.training  # generate restores the mode


def test_conv_needs_a_conv_shape():
    with pytest.raises(ShapeError, match="arch=mlp"):
        VAE((1, 8, 8), arch="conv")
