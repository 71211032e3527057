"""The ALI model: encoder, decoder and joint discriminator behind one Avalanche `Generator`."""
from __future__ import annotations

import functools
import warnings
from typing import Optional

import torch
from avalanche.models.generator import Generator
from torch import nn

from ali_replay.config import ModelConfig, replay_model
from ali_replay.errors import ConfigError
from ali_replay.models import Decoder, Encoder, JointDiscriminator, choose_preset
from ali_replay.runtime import evaluating


class ALI(Generator, nn.Module):
    """Adversarially Learned Inference: G_z(x), G_x(z) and D(x, z) trained jointly.

    After training, `decode` turns latent codes into images and `encode` turns images
    into latent codes (the posterior mean). With `num_classes > 0` all three networks
    see the label (class-conditional ALI).
    """

    def __init__(self, encoder: Optional[Encoder], decoder: Decoder, discriminator: JointDiscriminator,
                 shape, latent_dim: int, num_classes: int = 0, preset: str = "mlp"):
        nn.Module.__init__(self)
        self.encoder = encoder
        self.decoder = decoder
        self.discriminator = discriminator
        self.shape = tuple(int(s) for s in shape)
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.preset = preset

    @property
    def conditional(self) -> bool:
        """Whether the networks take class labels."""
        return self.num_classes > 0

    @property
    def device(self) -> torch.device:
        """The device the weights live on."""
        return next(self.parameters()).device

    def prior(self, n: int) -> torch.Tensor:
        """n codes from the prior N(0, I)."""
        return torch.randn(n, self.latent_dim, device=self.device)

    def random_labels(self, n: int) -> Optional[torch.Tensor]:
        """Uniform labels for a conditional model, None otherwise."""
        if not self.conditional:
            return None
        return torch.randint(0, self.num_classes, (n,), device=self.device)

    def encode(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The posterior mean of G_z(x): a deterministic latent code per image."""
        if self.encoder is None:
            raise TypeError("this model has no encoder (an encoder-free GAN)")
        return self.encoder(x, y)[0]

    def decode(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Images G_x(z) in [0, 1]."""
        return self.decoder(z, y)

    def reconstruct(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """G_x(G_z(x)): each image passed through the latent space and back."""
        return self.decode(self.encode(x, y), y)

    def sample(self, n: int, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """n images decoded from prior codes (with labels `y`, or uniform ones, when conditional)."""
        if self.conditional and y is None:
            y = self.random_labels(n)
        return self.decode(self.prior(n), y if self.conditional else None)

    def generate(self, batch_size: Optional[int] = None, condition: Optional[torch.Tensor] = None):
        """Avalanche's generator interface: a batch of samples, or one sample when batch_size is None."""
        n = batch_size or 1
        if condition is not None:
            condition = torch.as_tensor(condition, device=self.device).long().expand(n)
        with evaluating(self):  # replay uses the networks' inference mode (BatchNorm running statistics)
            out = self.sample(n, condition)
        return out if batch_size else out.squeeze(0)

    def get_features(self, x: torch.Tensor) -> torch.Tensor:
        """Avalanche's feature interface: the encoder's posterior mean."""
        return self.encode(x)

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Reconstructions, so that `model(x)` is meaningful inside Avalanche loops."""
        return self.reconstruct(x, y)


DEFAULT_CLASSES = 10  # what build_ali(shape) assumed before it took the class count


def _check_labels(num_classes: int, position: int, module: nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook of a conditional network (labels `y` at argument `position`): labels in 0..num_classes-1."""
    y = kwargs.get("y", args[position] if len(args) > position else None)
    if y is None or y.numel() == 0:
        return
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_classes:
        raise ConfigError(f"a label {high if high >= num_classes else low} reached a class-conditional ALI built "
                          f"for {num_classes} classes (labels 0..{num_classes - 1}); build it with "
                          "build_ali(shape, model_cfg, num_classes=N), N the stream's class count "
                          "(e.g. benchmark.n_classes)")


def build_ali(shape, model_cfg: Optional[ModelConfig] = None, num_classes: Optional[int] = None,
              encoder: bool = True) -> ALI:
    """An ALI (or, with `encoder=False`, an encoder-free GAN) for images of `shape`.

    `model_cfg` None: the networks of ALI replay's default recipe (`ali_replay.config.replay_model`).
    A class-conditional model needs `num_classes`, the stream's class count; its networks refuse
    labels outside 0..num_classes-1. `build_ali(shape)` alone, the call of earlier versions, still
    builds the default model for 10 classes, with a DeprecationWarning.
    """
    if model_cfg is None:
        model_cfg = replay_model()
        if num_classes is None:
            warnings.warn("build_ali(shape) without num_classes builds a class-conditional ALI for 10 classes; "
                          "pass num_classes=N (the stream's class count), or use strategies.replay_ali(shape, "
                          "num_classes)", DeprecationWarning, stacklevel=2)
            num_classes = DEFAULT_CLASSES
    if model_cfg.conditional:
        if num_classes is None:
            raise ConfigError("a class-conditional ALI needs the class count: build_ali(shape, model_cfg, "
                              "num_classes=N), N the stream's class count (e.g. benchmark.n_classes)")
        if int(num_classes) < 1:
            raise ConfigError(f"num_classes must be >= 1 for a class-conditional ALI, got {num_classes}")
    preset = choose_preset(model_cfg.preset, shape)
    n_cond = int(num_classes) if model_cfg.conditional else 0
    common = dict(latent_dim=model_cfg.latent_dim, preset=preset, width=model_cfg.width,
                  hidden=model_cfg.hidden, num_classes=n_cond)
    enc = Encoder(shape, **common) if encoder else None
    dec = Decoder(shape, **common)
    disc = JointDiscriminator(shape, dropout=model_cfg.dropout, use_z=encoder, **common)
    if n_cond:
        # A label out of range would otherwise fail deep inside one_hot, with no hint at the fix.
        for net, position in ((enc, 1), (dec, 1), (disc, 2)):  # encoder(x, y), decoder(z, y), discriminator(x, z, y)
            if net is not None:
                net.register_forward_pre_hook(functools.partial(_check_labels, n_cond, position), with_kwargs=True)
    return ALI(enc, dec, disc, shape, model_cfg.latent_dim, n_cond, preset)
