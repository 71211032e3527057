"""ALIGenerativeReplay: the supervised template with an ALIReplayPlugin, nothing else."""
from __future__ import annotations

from typing import Any, Callable, List, Mapping, Optional, Union

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.plugins.evaluation import default_evaluator
from avalanche.training.templates import SupervisedTemplate
from omegaconf import DictConfig
from torch.nn import CrossEntropyLoss, Module
from torch.optim import Optimizer

from ali_replay.ali import ALI
from strategies.ali_replay_plugin import ALIReplayPlugin
from strategies.replay import ReplayConfig


class ALIGenerativeReplay(SupervisedTemplate):
    """Generative replay with an ALI as the generator (Avalanche's GenerativeReplay arguments plus `ali`).

    `replay` is the plugin's `ReplayConfig` (or a mapping of its settings; None: the default
    recipe) and `replay_seed` the seed of its draws. The plugin is appended after `plugins`, so
    the result equals ``Naive(..., plugins=plugins + [ALIReplayPlugin(ali, replay, seed=replay_seed)])``.
    """

    def __init__(self, *, model: Module, optimizer: Optimizer, ali: ALI,
                 replay: Optional[Union[ReplayConfig, Mapping[str, Any], DictConfig]] = None, replay_seed: int = 0,
                 criterion=CrossEntropyLoss(), train_mb_size: int = 1, train_epochs: int = 1,
                 eval_mb_size: Optional[int] = None, device: Union[str, torch.device] = "cpu",
                 plugins: Optional[List[SupervisedPlugin]] = None,
                 evaluator: Union[EvaluationPlugin, Callable[[], EvaluationPlugin]] = default_evaluator,
                 eval_every=-1, **base_kwargs):
        self.replay_plugin = ALIReplayPlugin(ali, replay, seed=replay_seed)
        plugins = list(plugins or []) + [self.replay_plugin]
        super().__init__(model=model, optimizer=optimizer, criterion=criterion, train_mb_size=train_mb_size,
                         train_epochs=train_epochs, eval_mb_size=eval_mb_size, device=device, plugins=plugins,
                         evaluator=evaluator, eval_every=eval_every, **base_kwargs)

    @property
    def ali(self) -> ALI:
        """The generator."""
        return self.replay_plugin.ali

    def nbytes(self) -> int:
        """Bytes kept besides the solver (see `ALIReplayPlugin.nbytes`)."""
        return self.replay_plugin.nbytes()
