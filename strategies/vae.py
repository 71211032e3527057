"""A VAE generator for any image shape, trainable by Avalanche's VAETraining and VAE_loss."""
from __future__ import annotations

import math
from typing import Optional

import torch
from avalanche.models.generator import Generator
from torch import nn

from ali_replay.errors import ShapeError
from ali_replay.runtime import evaluating


class _MLPCoder(nn.Module):
    """Image -> features (flattened MLP)."""

    def __init__(self, shape, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), hidden), nn.BatchNorm1d(hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2))
        self.features = hidden

    def forward(self, x):
        return self.net(x)


class _MLPImage(nn.Module):
    """Latent code -> image logits (MLP)."""

    def __init__(self, shape, latent_dim: int, hidden: int):
        super().__init__()
        self.shape = tuple(shape)
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                 nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, math.prod(shape)))

    def forward(self, z):
        return self.net(z).view(-1, *self.shape)


def _conv_widths(side: int) -> list[int]:
    """Channel widths of the strided convolutions: two halvings for 28x28, three for 32x32."""
    return [32, 64] if side == 28 else [32, 64, 128]


class _ConvCoder(nn.Module):
    """Image -> features by strided convolutions (28x28 or 32x32)."""

    def __init__(self, shape):
        super().__init__()
        c, side, _ = shape
        layers, in_ch = [], c
        for out_ch in _conv_widths(side):
            layers += [nn.Conv2d(in_ch, out_ch, 4, 2, 1), nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2)]
            in_ch = out_ch
        layers.append(nn.Flatten())
        self.net = nn.Sequential(*layers)
        self.features = in_ch * (side // 2 ** len(_conv_widths(side))) ** 2

    def forward(self, x):
        return self.net(x)


class _ConvImage(nn.Module):
    """Latent code -> image logits by transposed convolutions, mirroring `_ConvCoder`."""

    def __init__(self, shape, latent_dim: int):
        super().__init__()
        c, side, _ = shape
        widths = _conv_widths(side)[::-1]
        self.start, self.side = widths[0], side // 2 ** len(widths)
        self.fc = nn.Sequential(nn.Linear(latent_dim, widths[0] * self.side ** 2), nn.LeakyReLU(0.2))
        layers = []
        for in_ch, out_ch in zip(widths, widths[1:] + [c]):
            layers.append(nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1))
            if out_ch != c:
                layers += [nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(self.fc(z).view(-1, self.start, self.side, self.side))


class VAE(Generator, nn.Module):
    """A Gaussian VAE with sigmoid outputs: MLP for small images, convolutions for 28x28 and 32x32.

    `forward(x)` returns ``(x_hat, mean, logvar)`` as Avalanche's MlpVAE does, so
    `avalanche.models.generator.VAE_loss` and `VAETraining` train it unchanged. Unlike
    MlpVAE it generates in the data's own [0, 1] range (no MNIST normalisation), draws
    with the standard deviation exp(logvar / 2), and generates without autograd history.
    """

    def __init__(self, shape, latent_dim: int = 16, hidden: int = 400, arch: str = "auto"):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3:
            raise ShapeError(f"images must be C x H x W, got shape {shape}")
        if arch == "auto":
            arch = "conv" if shape[1] == shape[2] and shape[1] in (28, 32) else "mlp"
        if arch == "conv" and not (shape[1] == shape[2] and shape[1] in (28, 32)):
            raise ShapeError(f"the conv VAE takes 28x28 or 32x32 images, got {shape[1]}x{shape[2]}; use arch=mlp")
        self.shape, self.latent_dim, self.arch = shape, latent_dim, arch
        if arch == "conv":
            self.encoder = _ConvCoder(shape)
            self.decoder = _ConvImage(shape, latent_dim)
        else:
            self.encoder = _MLPCoder(shape, hidden)
            self.decoder = _MLPImage(shape, latent_dim, hidden)
        self.calc_mean = nn.Linear(self.encoder.features, latent_dim)
        self.calc_logvar = nn.Linear(self.encoder.features, latent_dim)

    @property
    def device(self) -> torch.device:
        """The device the weights live on."""
        return next(self.parameters()).device

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance."""
        h = self.encoder(x)
        return self.calc_mean(h), self.calc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Each image decoded from its posterior mean (the VAE's deterministic round trip)."""
        return self.decode(self.encode(x)[0])

    def get_features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's features."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor):
        """(reconstruction, mean, logvar), the triple VAE_loss expects."""
        mean, logvar = self.encode(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        return self.decode(z), mean, logvar

    def generate(self, batch_size: Optional[int] = None, condition=None) -> torch.Tensor:
        """Samples decoded from N(0, I) codes (one image when batch_size is None), in eval mode."""
        with evaluating(self):  # batch norm uses running statistics, so a sample does not depend on its batch
            out = self.decode(torch.randn(batch_size or 1, self.latent_dim, device=self.device))
        return out if batch_size else out.squeeze(0)
