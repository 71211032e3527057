"""vae_replay: Avalanche's GenerativeReplay with the project's VAE, trained by Avalanche's VAETraining."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from avalanche.models.generator import VAE_loss
from avalanche.training import GenerativeReplay, VAETraining
from avalanche.training.plugins import GenerativeReplayPlugin
from avalanche.training.templates import SupervisedTemplate

from ali_replay.config import at_least, positive
from strategies._common import silent_evaluator
from strategies.avalanche_gr import (ReplayRecorder, UnitStreamOnly, generative_replay_memory, generator_phases,
                                     replay_preview)
from strategies.kind import StrategyContext, StrategyKind, template_args
from strategies.timing import GeneratorTimer
from strategies.vae import VAE


@dataclass
class VAEReplayParams:
    """vae_replay: Avalanche's GenerativeReplay with our VAE (strategies/vae.py) trained by VAETraining.

    Replay is concatenated to each batch and labelled by the argmax of the previous solver.
    The optimiser is Avalanche's default generator setting (Adam at lr 0.01; BENCHMARKS.md,
    "Figures behind the replay defaults"). Its VAE learns and replays [0, 1] images, so a
    stream that normalises is refused (use dgr).
    """

    latent_dim: int = field(default=16, metadata=at_least(1))
    hidden: int = field(default=400, metadata=at_least(1))  # MLP width (small images); 28x28 and 32x32: convolutions
    arch: str = "auto"  # auto | mlp | conv
    lr: float = field(default=0.01, metadata=positive())
    weight_decay: float = field(default=0.0001, metadata=at_least(0))
    replay_size: Optional[int] = field(default=None, metadata=at_least(1))  # per batch (None: as many as real ones)


def build_vae_replay(settings: VAEReplayParams, solver: torch.nn.Module, ctx: StrategyContext) -> SupervisedTemplate:
    """Avalanche's GenerativeReplay with our shape-agnostic VAE trained by Avalanche's VAETraining."""
    vae = VAE(ctx.input_shape, latent_dim=settings.latent_dim, hidden=settings.hidden, arch=settings.arch)
    gen_optimizer = torch.optim.Adam(vae.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    common = template_args(solver, ctx)
    generator_strategy = VAETraining(
        model=vae, optimizer=gen_optimizer, criterion=VAE_loss, train_mb_size=ctx.train_mb_size,
        train_epochs=ctx.generator_epochs or ctx.train_epochs, eval_mb_size=ctx.eval_mb_size,
        device=common["device"], plugins=[GeneratorTimer(), GenerativeReplayPlugin(replay_size=settings.replay_size)],
        evaluator=silent_evaluator)
    # The recorder goes first so that it sees each batch before Avalanche extends it.
    plugins = [UnitStreamOnly("vae_replay", "dgr (the same conv VAE, its replay in the stream's space)"),
               ReplayRecorder()] + list(ctx.plugins)
    return GenerativeReplay(generator_strategy=generator_strategy, replay_size=settings.replay_size,
                            plugins=plugins, **common)


VAE_REPLAY = StrategyKind(name="vae_replay", settings=VAEReplayParams, build=build_vae_replay,
                          memory=generative_replay_memory, preview=replay_preview, phases=generator_phases)
