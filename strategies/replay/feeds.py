"""Between the stream, the generator and the solver: the stream's input space, and how replay reaches the solver.

The generator learns and replays images in [0, 1]; `StreamSpace` maps the stream's images
there and back (given, or worked out from the first experience). A solver reads replay as
images in the stream's space (`ImageFeed`), or, when it classifies the ALI's codes (a
`LatentSolver` over the replay generator's ALI), as the codes themselves (`CodeFeed`).
`solver_feed` chooses one, once, for the solver.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch
from avalanche.models.utils import avalanche_forward

from ali_replay import distributed
from ali_replay.errors import ConfigError
from strategies.ali_fed_solver import ALIFedSolver
from strategies.input_space import InputSpace, infer_input_space
from strategies.latent_solver import LatentSolver
from strategies.replay.replay_set import ReplaySet, as_float_images

logger = logging.getLogger(__name__)


class StreamSpace:
    """The stream's input space: given, or read off the first experience; each experience's first images checked."""

    def __init__(self, given: Optional[InputSpace] = None):
        if given is not None and not isinstance(given, InputSpace):
            raise ConfigError("input_space must be a strategies.InputSpace (e.g. InputSpace(mean=..., std=...)) "
                              f"or None, got {type(given).__name__}")
        self.space = given
        self._checked = False

    def begin(self, experience) -> InputSpace:
        """The space of the stream `experience` belongs to (worked out once); its first images get checked."""
        if self.space is None:
            self.space = infer_input_space(experience)
            logger.info("replay in the stream's input space %r", self.space)
        self._checked = False
        return self.space

    def check(self, x: torch.Tensor) -> None:
        """Fail with the fix when this experience's first images lie outside the space (its range changed)."""
        if not self._checked:
            self.current.check(x, where="this experience's images")
            self._checked = True

    @property
    def current(self) -> InputSpace:
        """The space (the identity until it is known)."""
        return self.space or InputSpace()

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """The stream's images in the generator's [0, 1] (clipped: padding and interpolation overshoot)."""
        space = self.current
        return x if space.is_identity else space.to_unit(x).clamp_(0.0, 1.0)

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """[0, 1] images in the stream's space."""
        return self.current.from_unit(u)


class ImageFeed:
    """The solver reads images: replay reaches it decoded, in the stream's input space."""

    reads_codes = False

    def __init__(self, space: StreamSpace):
        self.space = space

    def inputs(self, replay: ReplaySet) -> torch.Tensor:
        """What the solver reads of a replay set: its images (uint8 or in [0, 1])."""
        return replay.images

    def logits(self, model: torch.nn.Module, x: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """The model's class scores for replayed images (uint8 or in [0, 1]) of `tasks`."""
        return avalanche_forward(model, self.space.from_unit(as_float_images(x)), tasks)


class CodeFeed:
    """The solver classifies the ALI's codes (a LatentSolver): replay reaches its head as codes, no image between."""

    reads_codes = True

    def inputs(self, replay: ReplaySet) -> torch.Tensor:
        """What the solver reads of a replay set: its codes."""
        return replay.codes

    def logits(self, model: torch.nn.Module, x: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """The model's class scores for replayed codes (the tasks play no part)."""
        return distributed.unwrap(model).classify_codes(x)


def solver_feed(solver: torch.nn.Module, generator, space: StreamSpace) -> ImageFeed | CodeFeed:
    """How replay reaches `solver`: codes for a LatentSolver over the generator's own model, else images."""
    if not isinstance(solver, LatentSolver):
        return ImageFeed(space)
    if solver.coder is not getattr(generator, "model", None):  # the ALI or VAE behind the generator
        raise ConfigError("the LatentSolver reads the codes of another model than the replay generator's, so "
                          "replayed codes would be of another latent space; build both on one ALI (or VAE): "
                          "LatentSolver(ali, head) and ALIReplayPlugin(ali, ...)")
    return CodeFeed()


def adopt_stream_space(solver: torch.nn.Module, space: InputSpace) -> None:
    """A solver fed through the ALI (its codes or its round trip) reads images in the stream's space."""
    if isinstance(solver, ALIFedSolver):
        solver.adopt_input_space(space)
