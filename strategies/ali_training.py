"""ALITraining: a generator strategy for an ALI, usable as Avalanche GenerativeReplay's generator_strategy."""
from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional, Union

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin, GenerativeReplayPlugin
from avalanche.training.templates import SupervisedTemplate

from ali_replay.ali import ALI
from ali_replay.config import OptimConfig, typed
from ali_replay.errors import ConfigError
from ali_replay.update import ALIOptimizers, check_optim, make_optimizers, train_step
from strategies.input_space import InputSpace, InputSpaceGenerator, infer_input_space
from strategies.replay import replay_optim

logger = logging.getLogger(__name__)


class ALITraining(SupervisedTemplate):
    """Trains an ALI on each experience, like Avalanche's VAETraining trains a VAE.

    Each mini-batch runs one `train_step` with the ALI's own two Adam optimizers (the
    discriminator's and the encoder/decoder's), so the template's single optimizer is
    not used and `make_optimizer` does nothing: Avalanche's version would add every
    parameter, the discriminator's included, to one optimizer. The callbacks
    `before_training_iteration` and `after_training_iteration` still fire, so
    `GenerativeReplayPlugin()` in `plugins` extends each mini-batch with the previous
    ALI's samples (the ALI's own replay).

    The ALI learns in [0, 1]; `input_space` maps the stream's images there and back
    (None: worked out from the first experience, see `infer_input_space`). The
    strategy's `model` is the ALI seen through that space (`InputSpaceGenerator`), so
    `GenerativeReplay(generator_strategy=ALITraining(...))` replays images like the
    ones the solver trains on. `optim_cfg` (OptimConfig or a partial mapping) defaults
    to the replay settings ALIReplayPlugin uses (`strategies.replay.replay_optim`).
    """

    def __init__(self, *, model: ALI, optimizer: Optional[ALIOptimizers] = None, optim_cfg: Any = None,
                 input_space: Optional[InputSpace] = None,
                 criterion=None, train_mb_size: int = 1, train_epochs: int = 1, eval_mb_size: Optional[int] = None,
                 device: Union[str, torch.device] = "cpu", plugins: Optional[List[SupervisedPlugin]] = None,
                 evaluator: Union[EvaluationPlugin, Callable[[], EvaluationPlugin], None] = None,
                 eval_every=-1, **base_kwargs):
        if not isinstance(model, ALI):
            raise ConfigError(f"ALITraining trains an ali_replay.ali.ALI, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, ALIOptimizers):
            raise ConfigError("ALITraining takes the ALI's two optimizers (ali_replay.update.ALIOptimizers, "
                              "from make_optimizers) or None to build them from optim_cfg; "
                              f"got {type(optimizer).__name__}")
        if input_space is not None and not isinstance(input_space, InputSpace):
            raise ConfigError("input_space must be a strategies.input_space.InputSpace (e.g. "
                              f"InputSpace(mean=..., std=...)) or None, got {type(input_space).__name__}")
        # A partial mapping overrides only its keys: the others keep the replay settings.
        self.optim_cfg = typed(OptimConfig, replay_optim(), optim_cfg, where="optim_cfg")
        check_optim(self.optim_cfg)
        self.ali = model
        self.ali_optimizers = optimizer if optimizer is not None else make_optimizers(model, self.optim_cfg)
        self.last_stats: dict[str, torch.Tensor] = {}
        super().__init__(model=InputSpaceGenerator(model, input_space), optimizer=self.ali_optimizers.g,
                         criterion=criterion, train_mb_size=train_mb_size, train_epochs=train_epochs,
                         eval_mb_size=eval_mb_size, device=device, plugins=plugins,
                         evaluator=evaluator if evaluator is not None else EvaluationPlugin(loggers=[]),
                         eval_every=eval_every, **base_kwargs)

    @property
    def input_space(self) -> Optional[InputSpace]:
        """The map between the stream's images and the ALI's [0, 1] (None until the first experience)."""
        return self.model.space

    def make_optimizer(self, **kwargs):
        """Nothing to do: the ALI keeps its own two optimizers over fixed parameter sets."""

    def _before_training(self, **kwargs):
        if self.ali.conditional and any(isinstance(p, GenerativeReplayPlugin) for p in self.plugins):
            # Avalanche's plugin labels replay of a generator strategy with zeros ("mock
            # labels"), which would be wrong conditions for a class-conditional ALI.
            raise ConfigError("ALITraining with GenerativeReplayPlugin needs an unconditional ALI "
                              "(model.conditional=false); use ALIReplayPlugin for a conditional one")
        super()._before_training(**kwargs)

    def _before_training_exp(self, **kwargs):
        # Before the plugins copy the generator: the copy must know the space it replays in.
        if self.model.space is None:
            self.model.space = infer_input_space(self.experience)
            logger.info("ALITraining replays in %r", self.model.space)
        super()._before_training_exp(**kwargs)

    def training_epoch(self, **kwargs):
        """One pass over the data: an ALI update per mini-batch, with the iteration callbacks."""
        space = self.model.space
        for self.mbatch in self.dataloader:
            if self._stop_training:
                break
            self._unpack_minibatch()
            space.check(self.mb_x)  # the real images only: replay is appended by the callbacks below
            self._before_training_iteration(**kwargs)
            y = self.mb_y.long() if self.ali.conditional else None
            x = space.to_unit(self.mb_x).clamp(0.0, 1.0)  # check() allowed a little overshoot
            self.last_stats = train_step(self.ali, self.ali_optimizers, self.optim_cfg, x, y)
            # Both players' losses, for loss metrics and loggers.
            self.loss = (self.last_stats["loss_d"] + self.last_stats["loss_g"]).reshape(1)
            self._after_training_iteration(**kwargs)

    def forward(self):
        """Reconstructions (samples for an encoder-free model) of the current mini-batch, in the stream's space."""
        space = self.model.space or InputSpace()
        if self.ali.encoder is None:
            return space.from_unit(self.ali.sample(len(self.mb_x)))
        y = self.mb_y.long() if self.ali.conditional else None
        return space.from_unit(self.ali.reconstruct(space.to_unit(self.mb_x), y))

    def criterion(self):
        """Mean absolute reconstruction error (zero for an encoder-free model)."""
        if self.ali.encoder is None:
            return self._make_empty_loss()
        return (self.mb_output - self.mb_x).abs().mean()
