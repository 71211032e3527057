"""ALI networks: stochastic encoder G_z(x), decoder G_x(z), joint discriminator D(x, z).

Each network is a convolutional or MLP trunk plus small fully connected heads. Labels,
when the model is class-conditional, enter as one-hot vectors at the fully connected
layers of all three networks (the ALI paper's conditional generation).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ali_replay.errors import ConfigError, ShapeError

PRESETS = ("mlp", "conv28", "conv32")
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -8.0, 2.0


def _channels(base: int, width: float) -> int:
    """A layer width scaled by the width multiplier, never below 8."""
    return max(8, int(round(base * width)))


def _one_hot(y: Optional[torch.Tensor], num_classes: int, like: torch.Tensor) -> Optional[torch.Tensor]:
    """The labels as a float one-hot matrix, or None for an unconditional model."""
    if num_classes == 0:
        return None
    if y is None:
        raise ValueError("a class-conditional model needs labels y")
    return F.one_hot(y.long(), num_classes).to(like.dtype)


def _with_label(h: torch.Tensor, onehot: Optional[torch.Tensor]) -> torch.Tensor:
    """Append the one-hot label to a flat feature vector."""
    return h if onehot is None else torch.cat([h, onehot], dim=1)


class Dropout(nn.Dropout):
    """`nn.Dropout` whose CPU masks come from 16-bit slices of 64-bit random words.

    On a CPU, drawing one Bernoulli variable per element is most of dropout's cost (and a
    sizeable share of an ALI update, all in the discriminator; BENCHMARKS.md, "Training speed");
    four 16-bit lanes of one random word each give an element's keep decision with probability
    round((1 - p) * 2^16) / 2^16, for fewer random bits. Other devices use `nn.Dropout` unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.inplace or x.device.type != "cpu" or not 0 < self.p < 1:
            return super().forward(x)
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, 2 ** 63 - 1)
        lanes = words.view(torch.int16)[:n].view(x.shape)
        keep = lanes < -2 ** 15 + round((1.0 - self.p) * 2 ** 16)
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))  # one scaled mask: one multiply each way


# --------------------------------------------------------------------------- trunks
# A trunk maps an image to a flat feature vector (x -> h) or back (h -> image).


def _mlp_x_trunk(shape, hidden: int, dropout: float = 0.0) -> tuple[nn.Module, int]:
    """Image -> features for the mlp preset."""
    layers = [nn.Flatten(), nn.Linear(math.prod(shape), hidden), nn.LeakyReLU(0.2)]
    if dropout:
        layers.append(Dropout(dropout))
    layers += [nn.Linear(hidden, hidden), nn.LeakyReLU(0.2)]
    if dropout:
        layers.append(Dropout(dropout))
    return nn.Sequential(*layers), hidden


def _conv_x_trunk(shape, width: float, dropout: float = 0.0, batchnorm: bool = True) -> tuple[nn.Module, int]:
    """Image -> features by strided convolutions (28x28: two halvings, 32x32: three)."""
    c, h, _ = shape
    widths = [32, 64] if h == 28 else [32, 64, 128]
    layers, in_ch = [], c
    for i, base in enumerate(widths):
        out_ch = _channels(base, width)
        layers.append(nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=not (batchnorm and i > 0)))
        if batchnorm and i > 0:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.LeakyReLU(0.2))
        if dropout:
            layers.append(Dropout(dropout))
        in_ch = out_ch
    side = h // 2 ** len(widths)
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), in_ch * side * side


class _ConvImageHead(nn.Module):
    """Features -> image by transposed convolutions, mirroring `_conv_x_trunk`."""

    def __init__(self, shape, in_features: int, width: float, hidden: int):
        super().__init__()
        c, h, _ = shape
        widths = [32, 64] if h == 28 else [32, 64, 128]
        chans = [_channels(b, width) for b in widths][::-1]
        self.side = h // 2 ** len(widths)
        self.start = chans[0]
        self.fc = nn.Sequential(
            nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, chans[0] * self.side * self.side),
            nn.BatchNorm1d(chans[0] * self.side * self.side), nn.ReLU(),
        )
        layers = []
        for in_ch, out_ch in zip(chans, chans[1:] + [c]):
            layers.append(nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=out_ch == c))
            if out_ch != c:
                layers += [nn.BatchNorm2d(out_ch), nn.ReLU()]
        self.deconv = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.fc(h).view(-1, self.start, self.side, self.side)
        return self.deconv(h)


class _MLPImageHead(nn.Module):
    """Features -> image for the mlp preset."""

    def __init__(self, shape, in_features: int, hidden: int):
        super().__init__()
        self.shape = tuple(shape)
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, math.prod(shape)),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).view(-1, *self.shape)


# --------------------------------------------------------------------------- networks


class Encoder(nn.Module):
    """G_z(x): a Gaussian posterior (mu, log_sigma) over latent codes, sampled by reparameterisation."""

    def __init__(self, shape, latent_dim: int, preset: str, width: float = 1.0, hidden: int = 512,
                 num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        if preset == "mlp":
            self.trunk, features = _mlp_x_trunk(shape, hidden)
        else:
            self.trunk, features = _conv_x_trunk(shape, width)
        fc = hidden if preset == "mlp" else 256
        self.head = nn.Sequential(
            nn.Linear(features + num_classes, fc), nn.LeakyReLU(0.2), nn.Linear(fc, 2 * latent_dim)
        )

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior's mean and log standard deviation."""
        h = _with_label(self.trunk(x), _one_hot(y, self.num_classes, x))
        mu, log_sigma = self.head(h).chunk(2, dim=1)
        return mu, log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)

    def sample(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """A reparameterised draw z = mu + sigma * eps."""
        return self.sample_with_mean(x, y)[0]

    def sample_with_mean(self, x: torch.Tensor, y: Optional[torch.Tensor] = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised draw z = mu + sigma * eps, and mu, from one pass."""
        mu, log_sigma = self(x, y)
        return mu + log_sigma.exp() * torch.randn_like(mu), mu


class Decoder(nn.Module):
    """G_x(z): latent code (and label) -> image in [0, 1]."""

    def __init__(self, shape, latent_dim: int, preset: str, width: float = 1.0, hidden: int = 512,
                 num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        if preset == "mlp":
            self.net = _MLPImageHead(shape, latent_dim + num_classes, hidden)
        else:
            self.net = _ConvImageHead(shape, latent_dim + num_classes, width, hidden=256)

    def forward(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Images for the given codes, as logits squashed by a sigmoid."""
        return torch.sigmoid(self.net(_with_label(z, _one_hot(y, self.num_classes, z))))


class JointDiscriminator(nn.Module):
    """D(x, z) = D_xz(D_x(x), D_z(z)): separate x and z pathways joined by an MLP, with dropout.

    With `use_z=False` the z pathway is dropped and D judges images alone (a plain GAN
    discriminator with the same x pathway, for the encoder-free ablation).
    """

    def __init__(self, shape, latent_dim: int, preset: str, width: float = 1.0, hidden: int = 512,
                 dropout: float = 0.2, num_classes: int = 0, use_z: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.use_z = use_z
        if preset == "mlp":
            self.d_x, fx = _mlp_x_trunk(shape, hidden, dropout)
        else:
            self.d_x, fx = _conv_x_trunk(shape, width, dropout, batchnorm=False)
        fz = hidden if preset == "mlp" else 256
        self.d_z = nn.Sequential(
            nn.Linear(latent_dim, fz), nn.LeakyReLU(0.2), Dropout(dropout),
            nn.Linear(fz, fz), nn.LeakyReLU(0.2), Dropout(dropout),
        ) if use_z else None
        joint_in = fx + (fz if use_z else 0) + num_classes
        fj = 2 * fz
        self.d_xz = nn.Sequential(
            nn.Linear(joint_in, fj), nn.LeakyReLU(0.2), Dropout(dropout),
            nn.Linear(fj, fj), nn.LeakyReLU(0.2), Dropout(dropout),
            nn.Linear(fj, 1),
        )

    def forward(self, x: torch.Tensor, z: Optional[torch.Tensor] = None,
                y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One logit per pair: high for (x, G_z(x)), low for (G_x(z), z)."""
        parts = [self.d_x(x)]
        if self.use_z:
            parts.append(self.d_z(z))
        onehot = _one_hot(y, self.num_classes, x)
        if onehot is not None:
            parts.append(onehot)
        return self.d_xz(torch.cat(parts, dim=1)).squeeze(1)


# --------------------------------------------------------------------------- presets

_PRESET_SHAPES = {"conv28": 28, "conv32": 32}


def choose_preset(preset: str, shape) -> str:
    """The preset to use for an input shape, checking that it fits."""
    shape = tuple(int(s) for s in shape)
    if preset == "auto":
        side = shape[1]
        return {28: "conv28", 32: "conv32"}.get(side, "mlp")
    if preset not in PRESETS:
        raise ConfigError(f"unknown model.preset '{preset}'; valid presets: auto, {', '.join(PRESETS)}")
    if len(shape) != 3:
        raise ShapeError(f"images must be C x H x W, got shape {shape}")
    side = _PRESET_SHAPES.get(preset)
    if side is not None and (shape[1], shape[2]) != (side, side):
        fitting = [p for p, s in _PRESET_SHAPES.items() if (shape[1], shape[2]) == (s, s)] + ["mlp"]
        raise ShapeError(
            f"model.preset={preset} expects {side}x{side} images but the data set's images are "
            f"{shape[0]}x{shape[1]}x{shape[2]}; use model.preset={' or '.join(fitting)} (or auto)"
        )
    return preset
