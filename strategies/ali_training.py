"""ALITraining: a generator strategy for an ALI, usable as Avalanche GenerativeReplay's generator_strategy."""
from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional, Union

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin, GenerativeReplayPlugin
from avalanche.training.templates import SupervisedTemplate

from ali_replay.ali import ALI
from ali_replay.config import OptimConfig
from ali_replay.errors import ConfigError
from ali_replay.training import ALIOptimizers, check_optim, make_optimizers, train_step
from strategies._common import as_config

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
    """

    def __init__(self, *, model: ALI, optimizer: Optional[ALIOptimizers] = None, optim_cfg: Any = None,
                 criterion=None, train_mb_size: int = 1, train_epochs: int = 1, eval_mb_size: Optional[int] = None,
                 device: Union[str, torch.device] = "cpu", plugins: Optional[List[SupervisedPlugin]] = None,
                 evaluator: Union[EvaluationPlugin, Callable[[], EvaluationPlugin], None] = None,
                 eval_every=-1, **base_kwargs):
        if not isinstance(model, ALI):
            raise ConfigError(f"ALITraining trains an ali_replay.ali.ALI, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, ALIOptimizers):
            raise ConfigError("ALITraining takes the ALI's two optimizers (ali_replay.training.ALIOptimizers, "
                              "from make_optimizers) or None to build them from optim_cfg; "
                              f"got {type(optimizer).__name__}")
        self.optim_cfg = as_config(OptimConfig, optim_cfg)
        check_optim(self.optim_cfg)
        self.ali_optimizers = optimizer if optimizer is not None else make_optimizers(model, self.optim_cfg)
        self.last_stats: dict[str, torch.Tensor] = {}
        super().__init__(model=model, optimizer=self.ali_optimizers.g, criterion=criterion,
                         train_mb_size=train_mb_size, train_epochs=train_epochs, eval_mb_size=eval_mb_size,
                         device=device, plugins=plugins,
                         evaluator=evaluator if evaluator is not None else EvaluationPlugin(loggers=[]),
                         eval_every=eval_every, **base_kwargs)

    def make_optimizer(self, **kwargs):
        """Nothing to do: the ALI keeps its own two optimizers over fixed parameter sets."""

    def _before_training(self, **kwargs):
        if self.model.conditional and any(isinstance(p, GenerativeReplayPlugin) for p in self.plugins):
            # Avalanche's plugin labels replay of a generator strategy with zeros ("mock
            # labels"), which would be wrong conditions for a class-conditional ALI.
            raise ConfigError("ALITraining with GenerativeReplayPlugin needs an unconditional ALI "
                              "(model.conditional=false); use ALIReplayPlugin for a conditional one")
        super()._before_training(**kwargs)

    def training_epoch(self, **kwargs):
        """One pass over the data: an ALI update per mini-batch, with the iteration callbacks."""
        for self.mbatch in self.dataloader:
            if self._stop_training:
                break
            self._unpack_minibatch()
            self._before_training_iteration(**kwargs)
            y = self.mb_y.long() if self.model.conditional else None
            self.last_stats = train_step(self.model, self.ali_optimizers, self.optim_cfg, self.mb_x, y)
            # Both players' losses, for loss metrics and loggers.
            self.loss = (self.last_stats["loss_d"] + self.last_stats["loss_g"]).reshape(1)
            self._after_training_iteration(**kwargs)

    def forward(self):
        """Reconstructions (samples for an encoder-free model) of the current mini-batch."""
        if self.model.encoder is None:
            return self.model.sample(len(self.mb_x))
        y = self.mb_y.long() if self.model.conditional else None
        return self.model.reconstruct(self.mb_x, y)

    def criterion(self):
        """Mean absolute reconstruction error (zero for an encoder-free model)."""
        if self.model.encoder is None:
            return self._make_empty_loss()
        return (self.mb_output - self.mb_x).abs().mean()
