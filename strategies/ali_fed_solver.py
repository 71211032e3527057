"""ALIFedSolver: the base of the solvers that read their images through a generator's coder they never train."""
from __future__ import annotations

import logging

import torch
from torch import nn

from ali_replay.ali import ALI
from ali_replay.errors import ConfigError
from strategies.input_space import InputSpace
from strategies.vae import VAE

logger = logging.getLogger(__name__)


class ALIFedSolver(nn.Module):
    """A classifier that reads its images through a coder it never trains: an ALI, or dgr's VAE.

    The coder (`coder`; `ali` names the same object) is held by reference, not as a
    submodule: `parameters()`, `state_dict()` and `.to()` cover the classifier only, so the
    solver's optimiser never updates the coder (its own objective trains it) and its bytes
    are not counted twice. A deep copy (the previous solver kept as a teacher) copies the
    coder too, so the teacher sees images through the coder it was trained with. The coder
    runs in eval mode (posterior means, BatchNorm running statistics) and without autograd
    history, in its [0, 1]: `input_space` maps a normalising stream's images there (None: the
    space of the replay plugin that trains it, see `adopt_input_space`; images in [0, 1] until then).
    """

    solver_input = ""  # the recipe's solver_input that selects this solver (named in errors)

    def __init__(self, coder: ALI | VAE, input_space: InputSpace | None = None):
        super().__init__()
        if isinstance(coder, ALI):
            if coder.encoder is None:
                raise ConfigError(f"solver_input={self.solver_input} needs an ALI with an encoder")
            if coder.conditional:
                raise ConfigError(f"solver_input={self.solver_input} needs an unconditional ALI "
                                  "(model.conditional=false): a class-conditional encoder needs the label the solver "
                                  "is asked for")
        elif not isinstance(coder, VAE):
            raise ConfigError(f"solver_input={self.solver_input} reads images through an ali_replay.ali.ALI or a "
                              f"strategies.vae.VAE, got {type(coder).__name__}")
        self.__dict__["coder"] = coder  # plain attribute: see the class docstring
        self.input_space = input_space or InputSpace()

    @property
    def ali(self):
        """The coder (an ALI, or dgr's VAE): the name the ALI recipes use."""
        return self.coder

    def adopt_input_space(self, space: InputSpace) -> None:
        """Read images in the stream's `space` (the replay plugin's), unless built with another one (an error).

        A solver built without a space of its own takes the plugin's, given or worked out from
        the stream, so that on a normalising stream its ALI sees [0, 1] images, as it does when it trains.
        """
        if self.input_space == space:
            return
        if not self.input_space.is_identity:
            raise ConfigError(f"the solver reads images in {self.input_space!r} but the stream's are in {space!r}; "
                              "build the solver and ALIReplayPlugin with one input_space (or leave the solver's "
                              "out: it takes the plugin's)")
        self.input_space = space
        logger.info("the %s solver reads images in %r", self.solver_input, space)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """The solver's images in the coder's [0, 1] (clipped where a normalising stream overshoots)."""
        space = self.input_space
        return x if space.is_identity else space.to_unit(x).clamp(0, 1)
