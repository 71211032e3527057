"""Solvers fed what the ALI makes of their inputs: its round trip (ReconstructionSolver) or its codes (LatentSolver)."""
from __future__ import annotations

import torch
from torch import nn

from ali_replay.ali import ALI
from ali_replay.errors import ConfigError
from ali_replay.runtime import evaluating
from strategies.input_space import InputSpace


class ALIFedSolver(nn.Module):
    """A classifier that reads its images through an ALI it never trains.

    The ALI is held by reference, not as a submodule: `parameters()`, `state_dict()`
    and `.to()` cover the classifier only, so the solver's optimiser never updates
    the ALI (its own objective trains it) and its bytes are not counted twice. A deep
    copy (the previous solver kept as a teacher) copies the ALI too, so the teacher sees
    images through the ALI it was trained with. The ALI runs in eval mode (posterior
    means, BatchNorm running statistics) and without autograd history, in its [0, 1]:
    `input_space` maps a normalising stream's images there (None: images already in [0, 1]).
    """

    solver_input = ""  # the recipe's solver_input that selects this solver (named in errors)

    def __init__(self, ali: ALI, input_space: InputSpace | None = None):
        super().__init__()
        if not isinstance(ali, ALI) or ali.encoder is None:
            raise ConfigError(f"solver_input={self.solver_input} needs an ALI with an encoder")
        if ali.conditional:
            raise ConfigError(f"solver_input={self.solver_input} needs an unconditional ALI "
                              "(model.conditional=false): a class-conditional encoder needs the label the solver "
                              "is asked for")
        self.__dict__["ali"] = ali  # plain attribute: see the class docstring
        self.input_space = input_space or InputSpace()

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """The solver's images in the ALI's [0, 1] (clipped where a normalising stream overshoots)."""
        space = self.input_space
        return x if space.is_identity else space.to_unit(x).clamp(0, 1)


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

    def __init__(self, ali: ALI, solver: nn.Module, input_space: InputSpace | None = None):
        super().__init__(ali, input_space)
        self.solver = solver

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """G_x(G_z(x)) for a batch of images, in eval mode, without autograd history."""
        with evaluating(self.ali):
            return self.input_space.from_unit(self.ali.reconstruct(self.to_unit(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of images."""
        return self.solver(self.reconstruct(x))
