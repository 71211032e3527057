"""One ALI update: encode, decode, score both joint pairs, two losses, two optimizer steps."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ali_replay.ali import ALI
from ali_replay.losses import cycle_loss, discriminator_loss, generator_loss


@dataclass
class ALIOptimizers:
    """The discriminator's Adam and the encoder/decoder's Adam: two players, two optimizers."""

    d: torch.optim.Optimizer
    g: torch.optim.Optimizer

    def state_dict(self) -> dict:
        """Both optimizers' states."""
        return {"d": self.d.state_dict(), "g": self.g.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore both optimizers' states."""
        self.d.load_state_dict(state["d"])
        self.g.load_state_dict(state["g"])

    def scale_lr(self, factor: float) -> None:
        """Multiply every learning rate by `factor` (used after a divergence)."""
        for opt in (self.d, self.g):
            for group in opt.param_groups:
                group["lr"] *= factor


def make_optimizers(ali: ALI, optim_cfg) -> ALIOptimizers:
    """Adam for D and Adam for (G_z, G_x), with the configured learning rates and betas."""
    betas = (optim_cfg.beta1, optim_cfg.beta2)
    g_params = list(ali.decoder.parameters())
    if ali.encoder is not None:
        g_params += list(ali.encoder.parameters())
    return ALIOptimizers(
        d=torch.optim.Adam(ali.discriminator.parameters(), lr=optim_cfg.lr_d, betas=betas),
        g=torch.optim.Adam(g_params, lr=optim_cfg.lr_g, betas=betas),
    )


class Players(nn.Module):
    """The encoder and decoder as one module, so that one update is one forward and one backward.

    That is the shape DistributedDataParallel needs; on one process it is a plain view of the ALI.
    """

    def __init__(self, ali: ALI):
        super().__init__()
        self.encoder, self.decoder = ali.encoder, ali.decoder

    def forward(self, x: torch.Tensor, z: torch.Tensor, y: Optional[torch.Tensor], round_trip_x: bool,
                round_trip_z: bool):
        """Encode x, decode z, and (when asked) take each back through the other network."""
        z_hat = self.encoder.sample(x, y)  # the pair (x, G_z(x))
        x_tilde = self.decoder(z, y)  # the pair (G_x(z), z)
        x_rec = self.decoder(z_hat, y) if round_trip_x else None
        z_rec = self.encoder(x_tilde, y)[0] if round_trip_z else None
        return z_hat, x_tilde, x_rec, z_rec


def train_step(ali: ALI, optimizers: ALIOptimizers, x: torch.Tensor, y: Optional[torch.Tensor] = None,
               cycle_x: float = 1.0, cycle_z: float = 1.0, weight: Optional[torch.Tensor] = None,
               players: Optional[nn.Module] = None, discriminator: Optional[nn.Module] = None
               ) -> dict[str, torch.Tensor]:
    """One ALI update on a batch; returns detached loss tensors.

    `weight` (one value per example) weights the real pairs, so that replayed and current
    examples can count differently. `players` and `discriminator` default to the ALI's own
    networks; distributed training passes them wrapped in DistributedDataParallel.
    An encoder-free model trains as a plain GAN (`players` is then its decoder).
    """
    if ali.encoder is None:
        return _gan_step(ali, optimizers, x, y, weight, decoder=players, discriminator=discriminator)
    y = y if ali.conditional else None
    players = players or Players(ali)
    discriminator = discriminator or ali.discriminator
    n = x.shape[0]

    # Encode the data and decode the prior (plus the round trips the cycle terms compare).
    z = ali.prior(n)
    z_hat, x_tilde, x_rec, z_rec = players(x, z, y, bool(cycle_x), bool(cycle_z))

    # 1) Discriminator: tell encoder pairs (real) from decoder pairs (fake), both scored in one pass.
    pair_y = None if y is None else torch.cat([y, y])
    logits = discriminator(torch.cat([x, x_tilde.detach()]), torch.cat([z_hat.detach(), z]), pair_y)
    real, fake = logits[:n], logits[n:]
    loss_d = discriminator_loss(real, fake, weight)
    optimizers.d.zero_grad(set_to_none=True)
    loss_d.backward()
    optimizers.d.step()

    # 2) Encoder and decoder: fool the updated discriminator, and stay each other's inverse.
    ali.discriminator.requires_grad_(False)  # no parameter gradients for D in this step
    logits = ali.discriminator(torch.cat([x, x_tilde]), torch.cat([z_hat, z]), pair_y)
    loss_adv = generator_loss(logits[:n], logits[n:], weight)
    loss_g = loss_adv
    stats = {}
    if cycle_x:
        stats["cycle_x"] = cycle_loss(x, x_rec, weight)
        loss_g = loss_g + cycle_x * stats["cycle_x"]
    if cycle_z:
        stats["cycle_z"] = cycle_loss(z, z_rec)
        loss_g = loss_g + cycle_z * stats["cycle_z"]
    optimizers.g.zero_grad(set_to_none=True)
    loss_g.backward()
    optimizers.g.step()
    ali.discriminator.requires_grad_(True)

    stats.update(loss_d=loss_d, loss_g=loss_adv, d_real=torch.sigmoid(real).mean(),
                 d_fake=torch.sigmoid(fake).mean())
    return {k: v.detach() for k, v in stats.items()}


def _gan_step(gan: ALI, optimizers: ALIOptimizers, x: torch.Tensor, y: Optional[torch.Tensor],
              weight: Optional[torch.Tensor], decoder: Optional[nn.Module] = None,
              discriminator: Optional[nn.Module] = None) -> dict[str, torch.Tensor]:
    """The encoder-free ablation: the same decoder and x-pathway of D, a plain GAN update."""
    y = y if gan.conditional else None
    decoder = decoder or gan.decoder
    discriminator = discriminator or gan.discriminator
    n = x.shape[0]
    x_fake = decoder(gan.prior(n), y)

    pair_y = None if y is None else torch.cat([y, y])
    logits = discriminator(torch.cat([x, x_fake.detach()]), None, pair_y)  # real and fake in one pass
    real, fake = logits[:n], logits[n:]
    loss_d = discriminator_loss(real, fake, weight)
    optimizers.d.zero_grad(set_to_none=True)
    loss_d.backward()
    optimizers.d.step()

    gan.discriminator.requires_grad_(False)
    loss_g = torch.nn.functional.softplus(-gan.discriminator(x_fake, None, y)).mean()
    optimizers.g.zero_grad(set_to_none=True)
    loss_g.backward()
    optimizers.g.step()
    gan.discriminator.requires_grad_(True)
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
            "d_real": torch.sigmoid(real).mean().detach(), "d_fake": torch.sigmoid(fake).mean().detach()}
