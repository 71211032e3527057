"""Avalanche's `GenerativeReplay` as shipped, on the project's streams (`avalanche_gr`).

`build_avalanche_gr` builds exactly what `GenerativeReplay(generator_strategy=None, ...)` builds
for itself in Avalanche 0.6 (`training/supervised/strategy_wrappers.py`), except that the
`MlpVAE` takes the stream's shape instead of the hard-coded 1x28x28:

* generator: `MlpVAE(input_shape, nhid=2)` (GenerativeReplay's latent size; the rest MlpVAE's
  defaults), optimised by Adam with lr 0.01 and weight decay 1e-4 on `VAE_loss`;
* `VAETraining` with the solver's mini-batch size and the solver's epochs per experience, and a
  `GenerativeReplayPlugin` so the VAE also trains on its own previous replay;
* the solver's `GenerativeReplayPlugin`: each mini-batch gets as many replayed images as real
  ones (or `replay_size`), labelled by the previous solver's argmax; `TrainGeneratorAfterExpPlugin`
  trains the VAE after the solver on each experience.

The one thing that does not carry over unchanged is the input space. MlpVAE's decoder ends in
a sigmoid followed by `Normalize((0.1307,), (0.3081,))`: it replays MNIST-normalised images,
which is what Avalanche's own `SplitMNIST` feeds the solver (its default transform is ToTensor
then that Normalize). The project's streams feed images in [0, 1]. Left alone, replay and real
data would live in different spaces and the comparison would handicap Avalanche's method.

Choice (`input_space`):

* `"mnist_normalised"` (default): real images in [0, 1] are mapped into the decoder's space,
  (x - 0.1307) / 0.3081, at the start of every training and evaluation iteration, for the
  solver and for the VAE alike (`MNISTNormalisedInput`, the first plugin of both strategies,
  so it runs before the replay is appended). The solver and the VAE then see exactly what
  they see on Avalanche's SplitMNIST, and the VAE loss keeps its balance between the
  reconstruction term (summed squared error in normalised units) and the KL term: the setting
  of the reference measurement (../shared/REFERENCE_RESULTS.md). On other streams the same
  affine map is applied: it is what the shipped decoder assumes, whatever the data. A stream
  that normalises its images itself (a Normalize in its transforms, as Avalanche's classic
  benchmarks and `benchmark.transforms=avalanche` have) is left as it is: that is Avalanche's
  GenerativeReplay exactly as shipped on that benchmark.
* `"unit"`: the decoder's final normalisation is replaced by the identity, so the VAE replays
  [0, 1] images like the stream's. Every network sees [0, 1] data, but the VAE's squared
  error shrinks by 0.3081^2 against its KL term, which makes it a different generator.

Either way the solver's weights, optimiser and loss are the caller's; only the input space of
the data the solver sees changes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from avalanche.core import SupervisedPlugin
from avalanche.models.generator import MlpVAE, VAE_loss
from avalanche.training import GenerativeReplay, VAETraining
from avalanche.training.plugins import GenerativeReplayPlugin
from avalanche.training.plugins.evaluation import default_evaluator
from torch import Tensor, nn

from ali_replay.config import at_least
from ali_replay.errors import ConfigError
from strategies._common import PREVIEW_SIZE, silent_evaluator
from strategies.input_space import infer_input_space
from strategies.kind import StrategyKind, template_args
from strategies.memory import KeptBytes, module_nbytes
from strategies.timing import GeneratorTimer

logger = logging.getLogger(__name__)

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the Normalize MlpVAE's decoder applies to its output
INPUT_SPACES = ("mnist_normalised", "unit")
# GenerativeReplay's own generator settings (Avalanche 0.6, strategy_wrappers.py).
LATENT_DIM = 2
GENERATOR_LR = 0.01
GENERATOR_WEIGHT_DECAY = 0.0001


def to_mnist_space(x: Tensor) -> Tensor:
    """Images in [0, 1] mapped as Avalanche's SplitMNIST maps them: (x - 0.1307) / 0.3081."""
    return (x - MNIST_MEAN) / MNIST_STD


def from_mnist_space(x: Tensor) -> Tensor:
    """The inverse of `to_mnist_space`: MNIST-normalised images back in [0, 1]."""
    return x * MNIST_STD + MNIST_MEAN


class ReplayRecorder(SupervisedPlugin):
    """Keeps the first replayed images of each experience of Avalanche's GenerativeReplay (for plots).

    It must run before GenerativeReplayPlugin: it notes the real batch size, and the
    replay Avalanche appends after it is read at `before_forward`.
    """

    def __init__(self):
        super().__init__()
        self.last_replay: Optional[tuple[Tensor, Tensor]] = None
        self._n_real = 0
        self._pending = False

    @staticmethod
    def to_picture(x: Tensor) -> Tensor:
        """Replayed images as pictures in [0, 1] (they already are here)."""
        return x

    def before_training_exp(self, strategy, *args, **kwargs):
        self._pending = True

    def before_training_iteration(self, strategy, *args, **kwargs):
        self._n_real = len(strategy.mbatch[0])

    def before_forward(self, strategy, *args, **kwargs):
        if self._pending and len(strategy.mb_x) > self._n_real:
            x, y = strategy.mb_x[self._n_real:], strategy.mb_y[self._n_real:]
            self.last_replay = (self.to_picture(x[:PREVIEW_SIZE]).detach().cpu(),
                                y[:PREVIEW_SIZE].detach().long().cpu())
            self._pending = False


class MNISTNormalisedInput(ReplayRecorder):
    """Maps each real mini-batch into MlpVAE's output space before anything else sees it.

    It must come before the `GenerativeReplayPlugin` of its strategy: the replay that plugin
    appends is already in that space. Its `last_replay` is mapped back to [0, 1].
    """

    to_picture = staticmethod(from_mnist_space)

    def __init__(self):
        super().__init__()
        self.maps: Optional[bool] = None  # decided on the stream's first experience

    def _decide(self, experience) -> None:
        """Map only a stream in [0, 1]: one that normalises itself is what MlpVAE was shipped for."""
        if self.maps is None:
            space = infer_input_space(experience)
            self.maps = space.is_identity
            if not self.maps:
                logger.info("avalanche_gr: the stream normalises its images itself (%r); fed as they are", space)

    def before_training_exp(self, strategy, *args, **kwargs):
        self._decide(strategy.experience)
        super().before_training_exp(strategy, *args, **kwargs)

    def before_eval_exp(self, strategy, *args, **kwargs):
        self._decide(strategy.experience)

    def before_training_iteration(self, strategy, *args, **kwargs):
        if self.maps:
            strategy.mbatch[0] = to_mnist_space(strategy.mbatch[0])
        super().before_training_iteration(strategy, *args, **kwargs)

    def before_eval_iteration(self, strategy, *args, **kwargs):
        if self.maps:
            strategy.mbatch[0] = to_mnist_space(strategy.mbatch[0])


class UnitStreamOnly(SupervisedPlugin):
    """Refuses a stream that is not in [0, 1], for a generator that learns and replays [0, 1] images."""

    def __init__(self, name: str, instead: str):
        super().__init__()
        self.name, self.instead = name, instead
        self._checked = False

    def before_training_exp(self, strategy, *args, **kwargs):
        if self._checked:
            return
        space = infer_input_space(strategy.experience)
        if not space.is_identity:
            raise ConfigError(f"{self.name} learns and replays images in [0, 1], but this stream feeds {space!r} "
                              f"(it normalises its images); use {self.instead}, or a stream without a Normalize")
        self._checked = True


def build_avalanche_gr(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Optional[nn.Module] = None,
    *,
    input_shape: Sequence[int],
    train_mb_size: int,
    train_epochs: int,
    eval_mb_size: Optional[int] = None,
    device: Any = "cpu",
    plugins: Optional[list] = None,
    evaluator: Any = default_evaluator,
    replay_size: Optional[int] = None,
    input_space: str = "mnist_normalised",
) -> GenerativeReplay:
    """Avalanche's GenerativeReplay with its default MlpVAE generator, for a stream of `input_shape` (see module doc).

    `model`, `optimizer` and `criterion` (default cross-entropy) are the solver's; the VAE
    trains `train_epochs` passes of `train_mb_size` per experience like the solver, as
    GenerativeReplay's own generator does. `replay_size` None replays as many images as each
    mini-batch holds.
    """
    if input_space not in INPUT_SPACES:
        raise ConfigError(f"unknown input_space {input_space!r} for avalanche_gr; valid: {', '.join(INPUT_SPACES)}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise ConfigError(f"avalanche_gr needs input_shape (channels, height, width), got {tuple(input_shape)}")
    device = torch.device(device)
    generator = MlpVAE(shape, nhid=LATENT_DIM, device=device)
    normalise = input_space == "mnist_normalised"
    if not normalise:
        generator.decoder.invTrans = nn.Identity()  # replay in [0, 1], the stream's space
    gen_optimizer = torch.optim.Adam([p for p in generator.parameters() if p.requires_grad], lr=GENERATOR_LR,
                                     weight_decay=GENERATOR_WEIGHT_DECAY)
    gen_plugins: list = [GeneratorTimer(), GenerativeReplayPlugin(replay_size=replay_size)]
    solver_plugins: list = list(plugins or [])
    if normalise:
        # First in both lists: the real batch is mapped before the replay plugin appends replay.
        gen_plugins.insert(0, MNISTNormalisedInput())
        solver_plugins.insert(0, MNISTNormalisedInput())
    generator_strategy = VAETraining(
        model=generator, optimizer=gen_optimizer, criterion=VAE_loss, train_mb_size=train_mb_size,
        train_epochs=train_epochs, eval_mb_size=eval_mb_size, device=device, plugins=gen_plugins,
        evaluator=silent_evaluator)
    strategy = GenerativeReplay(
        model=model, optimizer=optimizer, criterion=criterion if criterion is not None else nn.CrossEntropyLoss(),
        train_mb_size=train_mb_size, train_epochs=train_epochs, eval_mb_size=eval_mb_size, device=device,
        plugins=solver_plugins, evaluator=evaluator, generator_strategy=generator_strategy, replay_size=replay_size)
    logger.info("avalanche_gr: MlpVAE%s nhid=%d, %d epochs of batch %d per experience, input space %s", shape,
                LATENT_DIM, train_epochs, train_mb_size, input_space)
    return strategy


def replay_preview(strategy) -> Optional[tuple[Tensor, Tensor]]:
    """The first replayed images of the last experience in [0, 1] with their labels, or None."""
    recorder = next((p for p in strategy.plugins if isinstance(p, ReplayRecorder)), None)
    return None if recorder is None else recorder.last_replay


def generative_replay_memory(strategy) -> KeptBytes:
    """What Avalanche's GenerativeReplay keeps: its generator's weights and the previous solver, which labels replay."""
    plugin = next(p for p in strategy.plugins if isinstance(p, GenerativeReplayPlugin))
    generator = plugin.generator_strategy.model if plugin.generator_strategy else None
    return KeptBytes(generator=module_nbytes(generator), teacher=module_nbytes(strategy.model))


def generator_phases(strategy) -> dict[str, float]:
    """The seconds Avalanche's GenerativeReplay spent training its generator (its `GeneratorTimer`)."""
    plugin = next(p for p in strategy.plugins if isinstance(p, GenerativeReplayPlugin))
    timer = next((p for p in plugin.generator_strategy.plugins if isinstance(p, GeneratorTimer)), None)
    return {} if timer is None else dict(timer.phases.seconds)


@dataclass
class AvalancheGRParams:
    """avalanche_gr: Avalanche's GenerativeReplay as shipped (its MlpVAE and VAETraining defaults).

    The generator trains for the solver's epochs, as GenerativeReplay's own does; see the
    module doc for the one choice made (the space its replay lives in).
    """

    replay_size: Optional[int] = field(default=None, metadata=at_least(1))  # per mini-batch (None: as many as real)
    input_space: str = "mnist_normalised"  # mnist_normalised | unit


AVALANCHE_GR = StrategyKind(
    name="avalanche_gr", settings=AvalancheGRParams, memory=generative_replay_memory, preview=replay_preview,
    phases=generator_phases,
    build=lambda settings, solver, ctx: build_avalanche_gr(
        **template_args(solver, ctx), input_shape=ctx.input_shape, plugins=list(ctx.plugins),
        replay_size=settings.replay_size, input_space=settings.input_space))
