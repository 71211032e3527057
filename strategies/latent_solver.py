"""LatentSolver: a classifier over the ALI encoder's codes, which replay can feed codes directly."""
from __future__ import annotations

import torch
from torch import nn

from ali_replay.ali import ALI
from ali_replay.errors import ConfigError, ShapeError
from ali_replay.runtime import evaluating
from strategies.ali_fed_solver import ALIFedSolver
from strategies.input_space import InputSpace
from strategies.vae import VAE


def code_head(latent_dim: int, num_classes: int, width: int) -> nn.Sequential:
    """An MLP over codes: latent_dim -> width -> width -> num_classes, ReLU between the layers."""
    if min(latent_dim, num_classes, width) < 1:
        raise ConfigError(f"a code head needs latent_dim, num_classes and width >= 1, got {latent_dim}, "
                          f"{num_classes} and {width}; raise the one that is below 1")
    return nn.Sequential(nn.Linear(latent_dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, num_classes))


class LatentSolver(ALIFedSolver):
    """head(G_z(x)): a classifier over the ALI encoder's codes (posterior means) of its images.

    Why: replay then needs no image at all. ALIReplayPlugin, seeing a LatentSolver, feeds
    it replayed codes straight through `classify_codes` (drawn from a Gaussian per class
    over the encoder's codes, which the sleep phase carries into each new latent space),
    so replay and real images meet in one code space without the blur of a decoder in
    between, and the method keeps no real example and no code of one: the generator's
    weights and per-class statistics only.

    The encoder is never trained by the solver's loss (see `ALIFedSolver`): the solver's
    parameters are the head's alone, and the ALI learns its codes from its own objective.
    Built over a `strategies.vae.VAE` instead (`dgr@features`), it reads the VAE's posterior
    means: plain generative replay's counterpart, replayed the same way.
    """

    solver_input = "latent"

    def __init__(self, ali: ALI | VAE, head: nn.Module, input_space: InputSpace | None = None):
        super().__init__(ali, input_space)
        self.head = head

    @property
    def latent_dim(self) -> int:
        """The width of the codes the head reads."""
        return self.coder.latent_dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's mean codes of a batch of images, in eval mode, without autograd history."""
        u = self.to_unit(x)
        if isinstance(self.coder, VAE):
            with evaluating(self.coder):
                return self.coder.encode(u)[0]  # (mean, log-variance): the mean
        with evaluating(self.coder.encoder):
            return self.coder.encode(u)

    def classify_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of codes (N x latent_dim) of the ALI's current latent space."""
        if codes.ndim != 2 or codes.shape[1] != self.latent_dim:
            raise ShapeError(f"LatentSolver classifies codes of shape (N, {self.latent_dim}), got "
                             f"{tuple(codes.shape)}; pass images to forward() and codes to classify_codes()")
        return self.head(codes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of images."""
        return self.classify_codes(self.encode(x))
