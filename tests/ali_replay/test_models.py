"""Shapes of every preset on every data set's image shape, and preset/shape errors."""
import pytest
import torch

from ali_replay.ali import build_ali
from ali_replay.config import ModelConfig
from ali_replay.errors import ConfigError, ShapeError
from ali_replay.models import choose_preset

# Image shapes of the supported data sets: digits, (fashion-)MNIST, CIFAR/SVHN, and 32x32 grayscale.
CASES = [
    ("mlp", (1, 8, 8)), ("mlp", (1, 28, 28)), ("mlp", (3, 32, 32)),
    ("conv28", (1, 28, 28)), ("conv28", (3, 28, 28)),
    ("conv32", (3, 32, 32)), ("conv32", (1, 32, 32)),
]


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("preset,shape", CASES)
def test_preset_shapes(preset, shape, conditional):
    cfg = ModelConfig(preset=preset, latent_dim=12, conditional=conditional, width=0.25, hidden=64)
    ali = build_ali(shape, cfg, num_classes=10)
    x = torch.rand(5, *shape)
    y = torch.randint(0, 10, (5,))
    mu, log_sigma = ali.encoder(x, y if conditional else None)
    assert mu.shape == log_sigma.shape == (5, 12)
    z = ali.encoder.sample(x, y if conditional else None)
    assert z.shape == (5, 12)
    images = ali.decode(z, y if conditional else None)
    assert images.shape == (5, *shape)
    assert images.min() >= 0 and images.max() <= 1  # sigmoid output
    logits = ali.discriminator(x, z, y if conditional else None)
    assert logits.shape == (5,)
    assert ali.sample(3).shape == (3, *shape)
    assert ali.reconstruct(x, y if conditional else None).shape == x.shape


def test_auto_preset_follows_image_size():
    assert choose_preset("auto", (1, 8, 8)) == "mlp"
    assert choose_preset("auto", (1, 28, 28)) == "conv28"
    assert choose_preset("auto", (3, 32, 32)) == "conv32"


def test_preset_that_does_not_fit_names_shape_and_fix():
    with pytest.raises(ShapeError, match=r"conv32 expects 32x32.*1x28x28.*conv28"):
        choose_preset("conv32", (1, 28, 28))
    with pytest.raises(ShapeError, match="mlp"):
        choose_preset("conv28", (1, 8, 8))


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ConfigError, match="conv28"):
        choose_preset("resnet", (1, 28, 28))


def test_width_multiplier_narrows_conv32():
    wide = build_ali((3, 32, 32), ModelConfig(preset="conv32", width=1.0))
    narrow = build_ali((3, 32, 32), ModelConfig(preset="conv32", width=0.25))
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(narrow) < count(wide) / 2


def test_encoder_free_model_is_a_gan_with_same_decoder():
    cfg = ModelConfig(preset="mlp", hidden=32, latent_dim=8)
    gan = build_ali((1, 8, 8), cfg, encoder=False)
    ali = build_ali((1, 8, 8), cfg)
    assert gan.encoder is None and gan.discriminator.d_z is None
    assert [p.shape for p in gan.decoder.parameters()] == [p.shape for p in ali.decoder.parameters()]
    assert gan.discriminator(torch.rand(4, 1, 8, 8)).shape == (4,)
    with pytest.raises(TypeError):
        gan.encode(torch.rand(2, 1, 8, 8))


def test_cpu_dropout_keeps_the_expected_share_and_scales_like_nn_dropout():
    from ali_replay.models import Dropout
    torch.manual_seed(0)
    drop = Dropout(0.2)
    x = torch.ones(200_000, requires_grad=True)
    out = drop(x)
    kept = out != 0
    assert kept.float().mean().item() == pytest.approx(0.8, abs=0.005)
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.8))
    out.sum().backward()
    assert torch.equal(x.grad != 0, kept)  # the gradient flows through the kept elements only
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 1 / 0.8))
    # Each of a word's four 16-bit lanes decides independently: neighbours are uncorrelated.
    pairs = kept[:-1].float() * kept[1:].float()
    assert pairs.mean().item() == pytest.approx(0.64, abs=0.01)
    drop.eval()
    assert torch.equal(drop(x), x)
    torch.manual_seed(1)
    first = Dropout(0.5)(torch.ones(64))
    torch.manual_seed(1)
    assert torch.equal(Dropout(0.5)(torch.ones(64)), first)  # seeded like any torch random draw
    assert torch.equal(Dropout(1.0)(torch.ones(8)), torch.zeros(8))
