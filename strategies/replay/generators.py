"""The generator behind replay, as one small interface; the ALI (and the encoder-free GAN) implement it.

The plugin only decodes codes of given classes, encodes images where there is an encoder,
takes one training step on real plus replayed data, keeps a frozen copy of the decoder
for the sleep refresh, and counts the generator's bytes. Another generator (a VAE) slots
in by implementing the same members.
"""
from __future__ import annotations

import copy
from typing import Any, Optional, Protocol

import torch
import torch.nn.functional as F

from ali_replay import distributed
from ali_replay.ali import ALI
from ali_replay.config import OptimConfig
from ali_replay.errors import ConfigError
from ali_replay.runtime import compute_precision, evaluating
from ali_replay.update import Players, ReplayAnchors, check_optim, make_optimizers, train_step
from strategies.memory import module_nbytes
from strategies.replay.config import DGRRecipe, replay_optim
from strategies.vae import VAE


class ReplayGenerator(Protocol):
    """What generative replay needs of a generator: every member ALIReplayPlugin calls.

    `make_generator` checks a generator handed in for all of them and names the missing ones.
    """

    shape: tuple[int, ...]  # C x H x W of the images it makes
    latent_dim: int
    conditional: bool  # whether decode and encode read the classes
    has_encoder: bool
    holds_latent: bool  # whether its replay steps can be anchored to the codes they were decoded from
    encoder_frozen: bool  # `freeze_encoder` was called
    device: torch.device  # where its weights live

    def decode(self, codes: torch.Tensor, classes: Optional[torch.Tensor]) -> torch.Tensor:
        """Images in [0, 1] for codes (of `classes` when conditional), in eval mode, without autograd."""

    def encode(self, images: torch.Tensor, classes: Optional[torch.Tensor]) -> torch.Tensor:
        """Deterministic codes of images (float32, on the CPU), in eval mode, without autograd."""

    def frozen_decoder(self):
        """A frozen copy of the decoder as it is now: `(codes, classes) -> images`, for the sleep refresh."""

    def step(self, x: torch.Tensor, y: torch.Tensor, weight: Optional[torch.Tensor],
             anchors: Optional[ReplayAnchors] = None) -> dict[str, torch.Tensor]:
        """One training step on a batch (real examples, then replayed ones), `weight` per example.

        `anchors`: the replayed rows' codes, for a generator that `holds_latent` (else always None).
        """

    def freeze_encoder(self) -> None:
        """Stop training the encoder for good (a generator that `holds_latent`; others refuse)."""

    def distribute(self) -> None:
        """Under torchrun: train data-parallel from now on (or refuse with the fix)."""

    def to(self, device: torch.device) -> "ReplayGenerator":
        """Move the weights (and optimiser state) to a device."""

    def parameters(self):
        """Every parameter the generator trains (its own optimisers', never the solver's)."""

    @property
    def nbytes(self) -> int:
        """Bytes of every parameter and buffer the generator keeps."""


GENERATOR_MEMBERS = tuple(sorted(set(ReplayGenerator.__annotations__) | {
    name for name in vars(ReplayGenerator) if not name.startswith("_")}))


class FrozenDecoder:
    """A copy of a decoder that no longer trains: `(codes, classes) -> images` without autograd."""

    def __init__(self, decoder: torch.nn.Module, conditional: bool, device: torch.device):
        self.decoder = copy.deepcopy(decoder).eval().requires_grad_(False)
        self.conditional = conditional
        self.device = device

    @torch.no_grad()
    def __call__(self, codes: torch.Tensor, classes: Optional[torch.Tensor]) -> torch.Tensor:
        """Decoded images, on the decoder's device."""
        codes = codes.to(self.device, torch.float32)
        if not self.conditional:
            return self.decoder(codes)
        return self.decoder(codes, classes.to(self.device) if classes is not None else None)


class ALIGenerator:
    """An ALI with its two optimizers (`ali_replay.update`); an encoder-free model trains as a plain GAN."""

    def __init__(self, ali: ALI, optim: Optional[OptimConfig] = None):
        optim = optim if optim is not None else replay_optim()
        check_optim(optim)
        self.ali = ali
        self.optim = optim
        self.optimizers = make_optimizers(ali, optim)
        self.encoder_frozen = False  # `freeze_encoder` was called: the encoder no longer trains
        self._players: Optional[torch.nn.Module] = None  # DistributedDataParallel wrappers under torchrun
        self._discriminator: Optional[torch.nn.Module] = None

    @property
    def model(self) -> ALI:
        """The ALI (what a LatentSolver over this generator reads through)."""
        return self.ali

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.ali.shape)

    @property
    def latent_dim(self) -> int:
        return self.ali.latent_dim

    @property
    def conditional(self) -> bool:
        return self.ali.conditional

    @property
    def has_encoder(self) -> bool:
        return self.ali.encoder is not None

    @property
    def holds_latent(self) -> bool:
        """Its encoder can be anchored and frozen (an ALI; not the encoder-free GAN)."""
        return self.has_encoder

    @property
    def device(self) -> torch.device:
        return self.ali.device

    @property
    def nbytes(self) -> int:
        """Bytes of the ALI's parameters and buffers, the discriminator's included."""
        return module_nbytes(self.ali)

    def to(self, device: torch.device) -> "ALIGenerator":
        """Move the ALI to `device`."""
        self.ali.to(device)
        return self

    def parameters(self):
        """The ALI's parameters: encoder, decoder and discriminator."""
        return self.ali.parameters()

    def distribute(self) -> None:
        """Under torchrun: the players and the discriminator train in DistributedDataParallel, once wrapped."""
        if not distributed.current().enabled or self._players is not None:
            return
        check_optim(self.optim, distributed=True)
        players = Players(self.ali) if self.has_encoder else self.ali.decoder
        self._players = distributed.wrap(players)
        self._discriminator = distributed.wrap(self.ali.discriminator)

    def _condition(self, classes: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The classes on the ALI's device when it is conditional, else None."""
        return classes.to(self.device) if self.conditional and classes is not None else None

    def decode(self, codes: torch.Tensor, classes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """G_x(codes) in [0, 1], in eval mode, without autograd."""
        with evaluating(self.ali.decoder):
            return self.ali.decoder(codes.to(self.device), self._condition(classes))

    def encode(self, images: torch.Tensor, classes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Posterior means G_z(images), float32 on the CPU, in eval mode, without autograd."""
        with evaluating(self.ali):
            return self.ali.encode(images.to(self.device), self._condition(classes)).float().cpu()

    def frozen_decoder(self) -> FrozenDecoder:
        """The decoder as it is now, frozen."""
        return FrozenDecoder(self.ali.decoder, self.conditional, self.device)

    def freeze_encoder(self) -> None:
        """Stop training the encoder, for good: the codes it gives stay where they are.

        Its parameters take no gradient (the optimiser passes them by) and it runs in eval
        mode within `step` (BatchNorm statistics stay too); the decoder and the
        discriminator train on. Under torchrun the players are wrapped again (every process
        freezes in the same experience), since DistributedDataParallel fixes at wrapping which
        parameters take gradients: the decoder's keep being averaged across the processes.
        """
        if not self.has_encoder:
            raise ConfigError("an encoder-free GAN has no encoder to freeze; set freeze_encoder_after=null")
        self.ali.encoder.requires_grad_(False)
        self.encoder_frozen = True
        if self._players is not None:
            self._players = distributed.wrap(distributed.unwrap(self._players))

    def step(self, x: torch.Tensor, y: torch.Tensor, weight: Optional[torch.Tensor] = None,
             anchors: Optional[ReplayAnchors] = None) -> dict[str, torch.Tensor]:
        """One `train_step` of the ALI (or GAN) on the batch; `anchors`: its replayed rows' codes."""
        self.ali.train()
        if self.encoder_frozen:
            self.ali.encoder.eval()
        return train_step(self.ali, self.optimizers, self.optim, x, y, weight,
                          players=self._players, discriminator=self._discriminator, anchors=anchors)


class _VAEDecoder(torch.nn.Module):
    """A VAE's decoder with its sigmoid: codes to images in [0, 1] (what FrozenDecoder copies)."""

    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z)


class VAEGenerator:
    """A Gaussian VAE (`strategies.vae.VAE`, unconditional) with one Adam: plain generative replay's generator.

    Its codes are posterior means, so every source works with it: prior draws (DGR's
    replay), a Gaussian per class, stored codes.
    """

    conditional = False
    has_encoder = True
    holds_latent = False  # no anchored steps: replay_code_weight and replay_image_weight are for an ALI

    def __init__(self, vae: VAE, optim: Optional[OptimConfig] = None):
        optim = optim if optim is not None else DGRRecipe().optim
        check_optim(optim)
        self.vae = vae
        self.optim = optim
        self.optimizer = torch.optim.Adam(vae.parameters(), lr=optim.lr_g, betas=(optim.beta1, optim.beta2))
        self.encoder_frozen = False  # `freeze_encoder` was called: the encoder no longer trains

    @property
    def model(self) -> VAE:
        """The VAE (what a LatentSolver over this generator reads through)."""
        return self.vae

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.vae.shape)

    @property
    def latent_dim(self) -> int:
        return self.vae.latent_dim

    @property
    def device(self) -> torch.device:
        return self.vae.device

    @property
    def nbytes(self) -> int:
        """Bytes of the VAE's parameters and buffers."""
        return module_nbytes(self.vae)

    def to(self, device: torch.device) -> "VAEGenerator":
        """Move the VAE to `device`."""
        self.vae.to(device)
        return self

    def parameters(self):
        """The VAE's parameters."""
        return self.vae.parameters()

    def distribute(self) -> None:
        """Refuse data-parallel training, which this generator does not implement."""
        if distributed.current().enabled:
            raise ConfigError("the VAE generator trains on one process; run dgr without torchrun")

    def decode(self, codes: torch.Tensor, classes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Images in [0, 1] for codes, in eval mode, without autograd (classes are ignored)."""
        with evaluating(self.vae):
            return self.vae.decode(codes.to(self.device))

    def encode(self, images: torch.Tensor, classes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Posterior means, float32 on the CPU, in eval mode, without autograd."""
        with evaluating(self.vae):
            return self.vae.encode(images.to(self.device))[0].float().cpu()

    def frozen_decoder(self) -> FrozenDecoder:
        """The decoder (with its sigmoid) as it is now, frozen."""
        return FrozenDecoder(_VAEDecoder(self.vae), False, self.device)

    def _encoder_parts(self) -> tuple[torch.nn.Module, ...]:
        """The modules that map images to codes: the coder and the mean and log-variance layers."""
        return self.vae.encoder, self.vae.calc_mean, self.vae.calc_logvar

    def freeze_encoder(self) -> None:
        """Stop training the encoder, for good: the posterior means stay where they are.

        The encoder's parameters take no gradient and it runs in eval mode within `step`
        (BatchNorm statistics stay too); the decoder goes on learning to decode the fixed codes.
        """
        for part in self._encoder_parts():
            part.requires_grad_(False)
        self.encoder_frozen = True

    def step(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, weight: Optional[torch.Tensor] = None,
             anchors: Optional[ReplayAnchors] = None) -> dict[str, torch.Tensor]:
        """One Adam step on the negative ELBO (Bernoulli pixels, Gaussian codes), per example weighted by `weight`."""
        if anchors is not None:
            raise ConfigError("anchored replay steps (replay_code_weight, replay_image_weight) are for an ALI; "
                              "set them to 0 for the VAE generator")
        self.vae.train()
        if self.encoder_frozen:
            for part in self._encoder_parts():
                part.eval()
        bf16 = compute_precision(self.optim.precision, x.device.type) == "bfloat16"
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):  # the forward pass; the loss in float32
            x_hat, mean, logvar = self.vae(x)
        x_hat, mean, logvar = x_hat.float(), mean.float(), logvar.float()
        reconstruction = F.binary_cross_entropy(x_hat, x, reduction="none").flatten(1).sum(1)
        kl = -0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum(1)
        per_example = reconstruction + kl
        loss = per_example.mean() if weight is None else (weight * per_example).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach(), "reconstruction": reconstruction.mean().detach(), "kl": kl.mean().detach()}


def make_generator(model: Any, optim: OptimConfig) -> ReplayGenerator:
    """The generator interface around `model`: an ALI (or GAN), a VAE, or a ReplayGenerator as it is.

    A generator of another kind must have every member of `ReplayGenerator`; the missing ones are named.
    """
    if isinstance(model, ALI):
        return ALIGenerator(model, optim)
    if isinstance(model, VAE):
        return VAEGenerator(model, optim)
    if isinstance(model, (ALIGenerator, VAEGenerator)):
        return model
    missing = [name for name in GENERATOR_MEMBERS if not hasattr(model, name)]
    if not missing:
        return model
    raise ConfigError(f"the replay generator must be an ali_replay.ali.ALI, a strategies.vae.VAE or a "
                      f"strategies.replay.ReplayGenerator; {type(model).__name__} lacks {', '.join(missing)}")
