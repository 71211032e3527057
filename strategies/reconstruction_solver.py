"""ReconstructionSolver: any classifier, fed every image through the ALI's round trip."""
from __future__ import annotations

import torch
from torch import nn

from ali_replay.ali import ALI
from ali_replay.runtime import evaluating
from strategies.ali_fed_solver import ALIFedSolver
from strategies.input_space import InputSpace
from strategies.vae import VAE


class ReconstructionSolver(ALIFedSolver):
    """solver(G_x(G_z(x))): any classifier, fed every image through the ALI's round trip.

    Why: where the ALI cannot render fine detail (CIFAR-10 on a CPU budget), decoded
    replay is blurrier than real images, and a solver on raw pixels learns that blur
    means "an old class": pixel replay then forgets as fast as no replay, and so does a
    classifier over the encoder's codes of decoded images (codes of decoded images and
    of real ones stay apart). Passed through the same encoder and decoder, real images
    and replay reach the solver in one image domain, so replayed classes are judged like
    real ones. The reconstruction is mapped back into the stream's space for `solver`.
    """

    solver_input = "reconstruction"

    def __init__(self, ali: ALI | VAE, solver: nn.Module, input_space: InputSpace | None = None):
        super().__init__(ali, input_space)
        self.solver = solver

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """G_x(G_z(x)) for a batch of images (a VAE: decoded posterior means), in eval mode, without autograd."""
        with evaluating(self.coder):
            return self.input_space.from_unit(self.coder.reconstruct(self.to_unit(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of images."""
        return self.solver(self.reconstruct(x))
