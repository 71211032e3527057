"""ali_replay, gan_replay and dgr: one replay plugin (ALIReplayPlugin), three generators (ALI, GAN, VAE)."""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import torch
from avalanche.training import Naive
from avalanche.training.templates import SupervisedTemplate

from ali_replay.ali import ALI, build_ali
from ali_replay.errors import ConfigError
from strategies.ali_generative_replay import ALIGenerativeReplay
from strategies.ali_replay_plugin import ALIReplayPlugin
from strategies.kind import StrategyContext, StrategyKind, template_args
from strategies.latent_solver import LatentSolver, code_head
from strategies.memory import KeptBytes
from strategies.reconstruction_solver import ReconstructionSolver
from strategies.recipes import default_recipe, shape_key
from strategies.replay import (DGRRecipe, GANReplayRecipe, ReplayConfig, ReplayRecipe, SolverRecipe,
                               replay_fields)
from strategies.vae import VAE

logger = logging.getLogger(__name__)


def replay_ali(shape, num_classes: Optional[int] = None, recipe: Optional[ReplayRecipe] = None, *,
               conditional: Optional[bool] = None) -> ALI:
    """The ALI of a replay recipe (default: the default recipe's, `ReplayRecipe().model`) for images of `shape`.

    `num_classes` is the stream's class count (e.g. `benchmark.n_classes`); a class-conditional
    recipe refuses to guess it. `conditional=False` drops the class input (for Avalanche's
    `GenerativeReplay`, whose replay carries no labels).
    """
    if recipe is None:
        chosen = default_recipe("ali_replay", shape)
        if chosen is not None:
            logger.warning("on %s images the recipe chosen on validation data is ali_replay@%s, whose solver reads "
                           "the ALI's codes: build it with strategies.build_strategy('ali_replay', ...) or a "
                           "LatentSolver (README.md); this ALI replays pixels (the default image recipe)",
                           shape_key(shape), chosen)
    model = (recipe or ReplayRecipe()).model
    if conditional is not None:
        model = dataclasses.replace(model, conditional=conditional)
    return build_ali(tuple(shape), model, num_classes=num_classes)


def replay_plugin(strategy: SupervisedTemplate) -> ALIReplayPlugin:
    """The strategy's ALIReplayPlugin."""
    return next(p for p in strategy.plugins if isinstance(p, ALIReplayPlugin))


def _replay_settings(recipe: ReplayConfig, ctx: StrategyContext) -> ReplayConfig:
    """The plugin's settings out of a recipe; a null `ali_epochs` takes the benchmark's generator budget."""
    replay = ReplayConfig(**{key: getattr(recipe, key) for key in replay_fields()})
    if replay.ali_epochs is None:  # None there too: one generator step per solver iteration
        replay.ali_epochs = ctx.generator_epochs
    return replay


def _solver_through(recipe: SolverRecipe, coder: ALI | VAE, solver: torch.nn.Module, ctx: StrategyContext
                    ) -> dict:
    """The template arguments for the solver the recipe's `solver_input` names, reading through `coder`.

    ``image``: the benchmark's solver on the stream's images; ``reconstruction``: it, on every
    image's round trip through `coder`; ``latent``: an MLP head on `coder`'s codes in its place.
    """
    common = template_args(solver, ctx)
    if recipe.solver_input == "image":
        return common
    if ctx.scenario != "class_incremental":
        raise ConfigError(f"solver_input={recipe.solver_input} supports class_incremental streams only (the "
                          "solver gets no task labels); use solver_input=image for task_incremental")
    if recipe.solver_input == "latent":
        logger.info("solver_input=latent: the benchmark's solver is replaced by an MLP head on the %s's codes",
                    type(coder).__name__)
        model = LatentSolver(coder, code_head(coder.latent_dim, ctx.num_classes, recipe.latent_head_width))
    else:
        model = ReconstructionSolver(coder, solver)
    return {**common, "model": model, "optimizer": torch.optim.Adam(model.parameters(), lr=ctx.lr)}


def _build_ali_replay(recipe: ReplayRecipe, solver: torch.nn.Module, ctx: StrategyContext, encoder: bool = True
                      ) -> SupervisedTemplate:
    """An ALI (or, without encoder, a GAN) behind ALIReplayPlugin; the recipe's solver_input says what the
    solver reads (the benchmark's solver on images or reconstructions, or an MLP head on the ALI's codes)."""
    if recipe.solver_input != "image" and not encoder:
        raise ConfigError(f"solver_input={recipe.solver_input} needs an encoder: use ali_replay, not gan_replay")
    ali = build_ali(ctx.input_shape, recipe.model, num_classes=ctx.num_classes, encoder=encoder)
    common = _solver_through(recipe, ali, solver, ctx)
    return ALIGenerativeReplay(ali=ali, replay=_replay_settings(recipe, ctx), replay_seed=ctx.seed,
                               plugins=list(ctx.plugins), **common)


def _build_dgr(recipe: DGRRecipe, solver: torch.nn.Module, ctx: StrategyContext) -> SupervisedTemplate:
    """Naive plus ALIReplayPlugin with a VAE as the generator: the same replay as ali_replay, another generator;
    solver_input as for ali_replay (`dgr@features`: the head on the VAE's codes)."""
    vae = VAE(ctx.input_shape, latent_dim=recipe.model.latent_dim, hidden=recipe.model.hidden, arch=recipe.model.arch)
    plugin = ALIReplayPlugin(vae, _replay_settings(recipe, ctx), seed=ctx.seed)
    return Naive(plugins=list(ctx.plugins) + [plugin], **_solver_through(recipe, vae, solver, ctx))


def _memory(strategy: SupervisedTemplate) -> KeptBytes:
    return replay_plugin(strategy).memory()


def _preview(strategy: SupervisedTemplate):
    return replay_plugin(strategy).last_replay


def _phases(strategy: SupervisedTemplate) -> dict[str, float]:
    return dict(replay_plugin(strategy).phases.seconds)


ALI_REPLAY = StrategyKind(name="ali_replay", settings=ReplayRecipe, build=_build_ali_replay, memory=_memory,
                          preview=_preview, phases=_phases, distributed=True)
GAN_REPLAY = StrategyKind(name="gan_replay", settings=GANReplayRecipe, memory=_memory, preview=_preview,
                          phases=_phases, distributed=True,
                          build=lambda recipe, solver, ctx: _build_ali_replay(recipe, solver, ctx, encoder=False))
DGR = StrategyKind(name="dgr", settings=DGRRecipe, build=_build_dgr, memory=_memory, preview=_preview,
                   phases=_phases)
