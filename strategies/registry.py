"""The strategies by name: build one for a solver, count the bytes it keeps, preview its replay."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch
from avalanche.core import SupervisedPlugin
from avalanche.models.generator import VAE_loss
from avalanche.training import Cumulative, GenerativeReplay, Naive, Replay, VAETraining
from avalanche.training.plugins import EvaluationPlugin, GenerativeReplayPlugin, ReplayPlugin
from avalanche.training.plugins.evaluation import default_evaluator
from avalanche.training.templates import SupervisedTemplate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from ali_replay.ali import build_ali
from ali_replay.config import at_least, merge_config, positive, resolve_config_path
from ali_replay.errors import ConfigError
from strategies._common import as_config, check_choice, module_nbytes
from strategies.ali_generative_replay import ALIGenerativeReplay
from strategies.ali_replay_plugin import ALIReplayPlugin
from strategies.avalanche_gr import ReplayRecorder, UnitStreamOnly, build_avalanche_gr
from strategies.latent_solver import LatentSolver, code_head
from strategies.reconstruction_solver import ALIFedSolver, ReconstructionSolver
from strategies.replay import (SOLVER_INPUTS, DGRRecipe, GANReplayRecipe, LatentMemorySource, ReplayConfig,
                               ReplayRecipe, replay_fields)
from strategies.vae import VAE

logger = logging.getLogger(__name__)

STRATEGY_NAMES = ("naive", "joint", "er", "avalanche_gr", "vae_replay", "dgr", "gan_replay", "ali_replay")
SCENARIOS = ("class_incremental", "task_incremental")

# Stored images are counted as uint8 (one byte per pixel value, the dtype the data sets
# hold them in, see ali_replay.data.ImageDataset) plus an int64 label each.
PIXEL_BYTES = 1
LABEL_BYTES = 8
PREVIEW_SIZE = 64
# The kinds of bytes a strategy keeps between experiences (strategy_memory).
MEMORY_KINDS = ("generator", "stored_examples", "statistics", "teacher")

@dataclass
class NoParams:
    """naive and joint take no parameters."""


@dataclass
class ERParams:
    """er: Avalanche's Replay, a buffer of real examples balanced over experiences."""

    mem_size: int = field(default=200, metadata=at_least(1))  # examples kept (uint8 images + an int64 label each)
    # when set: as many examples as fit in this many bytes (overrides mem_size)
    memory_bytes: Optional[int] = field(default=None, metadata=at_least(0))


@dataclass
class VAEReplayParams:
    """vae_replay: Avalanche's GenerativeReplay with our VAE (strategies/vae.py) trained by VAETraining.

    Replay is concatenated to each batch and labelled by the argmax of the previous solver.
    The optimiser is Avalanche's default generator setting (BENCHMARKS.md, "Split digits").
    Its VAE learns and replays [0, 1] images, so a stream that normalises is refused (use dgr).
    """

    latent_dim: int = field(default=16, metadata=at_least(1))
    hidden: int = field(default=400, metadata=at_least(1))  # MLP width (small images); 28x28 and 32x32: convolutions
    arch: str = "auto"  # auto | mlp | conv
    lr: float = field(default=0.01, metadata=positive())
    weight_decay: float = field(default=0.0001, metadata=at_least(0))
    replay_size: Optional[int] = field(default=None, metadata=at_least(1))  # per batch (None: as many as real ones)


@dataclass
class AvalancheGRParams:
    """avalanche_gr: Avalanche's GenerativeReplay as shipped (its MlpVAE and VAETraining defaults).

    The generator trains for the solver's epochs, as GenerativeReplay's own does; see
    strategies/avalanche_gr.py for the one choice made (the space its replay lives in).
    """

    replay_size: Optional[int] = field(default=None, metadata=at_least(1))  # per mini-batch (None: as many as real)
    input_space: str = "mnist_normalised"  # mnist_normalised | unit


# Each strategy's parameters, typed: their defaults, and the keys a recipe or an override may set.
SCHEMAS: dict[str, type] = {
    "naive": NoParams,
    "joint": NoParams,
    "er": ERParams,
    "avalanche_gr": AvalancheGRParams,
    "vae_replay": VAEReplayParams,
    "dgr": DGRRecipe,
    "gan_replay": GANReplayRecipe,
    "ali_replay": ReplayRecipe,
}


@dataclass
class StrategyContext:
    """What every strategy needs to know about the benchmark it runs in."""

    input_shape: tuple[int, int, int]
    num_classes: int
    scenario: str  # "class_incremental" | "task_incremental"
    train_epochs: int  # solver epochs per experience
    train_mb_size: int
    eval_mb_size: int
    lr: float  # solver Adam learning rate
    device: torch.device
    evaluator: Any = None  # an avalanche EvaluationPlugin (or None for the default)
    plugins: list = field(default_factory=list)  # extra plugins (loggers etc.)
    seed: int = 0
    generator_epochs: Optional[int] = None  # VAE/ALI passes per experience where separate (None: train_epochs)


# --------------------------------------------------------------------------- specs


def parse_spec(spec: str) -> tuple[str, Optional[str], list[str]]:
    """'name[@recipe][+key=value...]' -> (name, recipe or None, the key=value overrides), the name checked."""
    head, *overrides = str(spec).split("+")
    name, _, recipe = head.partition("@")
    name = name.strip()
    if name not in STRATEGY_NAMES:
        raise ConfigError(f"unknown strategy {name!r}; valid strategies: {', '.join(STRATEGY_NAMES)}")
    overrides = [item.strip() for item in overrides]
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} in strategy spec {spec!r} is not key=value; "
                              "write e.g. ali_replay@filtered+ali_epochs=5")
    return name, recipe.strip() or None, overrides


def _strategy_file(name: str) -> DictConfig:
    """configs/strategy/<name>.yaml: its named recipes and the recipe each input shape defaults to."""
    path = resolve_config_path(name, "strategy")
    try:
        cfg = OmegaConf.load(path)
    except Exception as error:  # YAML errors come in many types
        raise ConfigError(f"cannot read strategy config {path}: {error}") from error
    extra = set(cfg.keys()) - {"recipes", "shape_defaults"}
    if extra:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(extra)}; accepted: recipes, shape_defaults (the "
                          f"defaults are {SCHEMAS[name].__module__}.{SCHEMAS[name].__name__})")
    recipes = cfg.get("recipes") or OmegaConf.create({})
    for shape, recipe in (cfg.get("shape_defaults") or {}).items():
        if recipe not in recipes:
            raise ConfigError(f"{path}: shape_defaults names recipe {recipe!r} for {shape}, which is not among its "
                              f"recipes ({', '.join(recipes.keys()) or 'none'}); add it or name another")
    return cfg


def _load_recipes(name: str) -> DictConfig:
    """The named recipes in configs/strategy/<name>.yaml (each a mapping of settings over the defaults)."""
    return _strategy_file(name).get("recipes") or OmegaConf.create({})


def shape_key(input_shape) -> str:
    """(3, 32, 32) -> '3x32x32', the way shape_defaults names a shape."""
    return "x".join(str(int(s)) for s in input_shape)


def _shape_recipe(strategy_file: DictConfig, input_shape) -> Optional[str]:
    """The recipe a strategy file's `shape_defaults` names for `input_shape` (None: none, or no shape)."""
    if input_shape is None:
        return None
    return (strategy_file.get("shape_defaults") or {}).get(shape_key(input_shape))


def default_recipe(name: str, input_shape=None) -> Optional[str]:
    """The recipe a bare `name` stands for on images of `input_shape` (None: the strategy's defaults).

    configs/strategy/<name>.yaml's `shape_defaults` maps shapes ('3x32x32') to recipes: one recipe
    per shape, chosen on validation data, so that a stream nobody tuned on gets the recipe of its shape.
    """
    name, _, _ = parse_spec(name)
    return None if input_shape is None else _shape_recipe(_strategy_file(name), input_shape)


def strategy_recipes(name: str) -> list[str]:
    """The recipe names configs/strategy/<name>.yaml offers."""
    name, _, _ = parse_spec(name)
    return list(_load_recipes(name).keys())


def load_strategy_params(spec: str, input_shape=None) -> tuple[str, DictConfig]:
    """'ali_replay@latent_memory+optim.precision=bfloat16' -> ('ali_replay', every setting of that spec).

    The strategy's typed defaults, then the recipe's settings, then the overrides, in that order.
    A spec without a recipe takes the one its shape defaults to (`default_recipe`) when
    `input_shape` is given, e.g. `ali_replay` on 3 x 32 x 32 images is `ali_replay@features`.
    """
    name, recipe, overrides = parse_spec(spec)
    strategy_file = _strategy_file(name)
    if recipe is None:
        recipe = _shape_recipe(strategy_file, input_shape)
        if recipe is not None:
            logger.info("%s on %s images: recipe %s (shape_defaults)", name, shape_key(input_shape), recipe)
    params = OmegaConf.create({})
    if recipe is not None:
        recipes = strategy_file.get("recipes") or OmegaConf.create({})
        if recipe not in recipes:
            valid = ", ".join(recipes.keys()) or "(none)"
            raise ConfigError(f"unknown recipe {recipe!r} of strategy {name}; valid recipes: {valid}")
        params = recipes[recipe]
    cfg = as_config(SCHEMAS[name], params, where=f"recipe {name}@{recipe}" if recipe else f"{name} params")
    return name, merge_config(cfg, overrides=overrides)


def _plain(params: Optional[Mapping]) -> dict:
    """A mapping (or DictConfig) as a plain nested dict."""
    if params is None:
        return {}
    if isinstance(params, DictConfig):
        return OmegaConf.to_container(params, resolve=True)
    return {k: _plain(v) if isinstance(v, (Mapping, DictConfig)) else v for k, v in params.items()}


def _merged(base: dict, top: dict) -> dict:
    """`top` over `base`, nested mappings merged key by key."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _params(name: str, params: Optional[Mapping], base: Optional[Mapping] = None) -> dict:
    """The strategy's defaults, then `base`, then `params`, checked against its schema, as a plain dict."""
    merged = _merged(_plain(base), _plain(params))
    return OmegaConf.to_container(as_config(SCHEMAS[name], merged, where=f"{name} params"), resolve=True)


# --------------------------------------------------------------------------- building


def _silent_evaluator() -> EvaluationPlugin:
    """An evaluator without metrics or loggers, for the generator's own strategy."""
    return EvaluationPlugin(loggers=[])


def build_strategy(name: str, solver: torch.nn.Module, params: Optional[Mapping], ctx: StrategyContext
                   ) -> SupervisedTemplate:
    """A ready-to-train strategy for `solver` (Adam at ctx.lr): `name` is a spec, `params` go on top of its settings.

    A spec without a recipe takes the recipe of ctx.input_shape where the strategy's config names
    one (`default_recipe`): `ali_replay` on 3 x 32 x 32 images is `ali_replay@features`, whose
    MLP head on the ALI's codes replaces `solver`.
    """
    name, spec_params = load_strategy_params(name, ctx.input_shape)
    check_choice("scenario", ctx.scenario, SCENARIOS)
    p = _params(name, params, base=spec_params)
    optimizer = torch.optim.Adam(solver.parameters(), lr=ctx.lr)
    device = torch.device(ctx.device)
    extra_plugins = list(ctx.plugins)
    common = dict(model=solver, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(),
                  train_mb_size=ctx.train_mb_size, train_epochs=ctx.train_epochs, eval_mb_size=ctx.eval_mb_size,
                  device=device, evaluator=ctx.evaluator if ctx.evaluator is not None else default_evaluator)
    generator_epochs = ctx.generator_epochs or ctx.train_epochs

    # The generator's initial weights follow ctx.seed without touching the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        if name == "naive":
            strategy = Naive(plugins=extra_plugins, **common)
        elif name == "joint":
            strategy = Cumulative(plugins=extra_plugins, **common)
        elif name == "er":
            strategy = Replay(mem_size=er_buffer_size(p, ctx.input_shape), plugins=extra_plugins, **common)
        elif name == "avalanche_gr":
            strategy = build_avalanche_gr(**common, input_shape=ctx.input_shape, plugins=extra_plugins,
                                          replay_size=p["replay_size"], input_space=p["input_space"])
        elif name == "vae_replay":
            strategy = _build_vae_replay(p, ctx, common, extra_plugins, generator_epochs)
        elif name == "dgr":
            strategy = _build_dgr(p, ctx, common, extra_plugins)
        else:
            strategy = _build_generative_replay(name, p, solver, ctx, common, extra_plugins)
    strategy.strategy_name = name
    strategy.strategy_params = p
    logger.info("built strategy %s with %s", name, p)
    return strategy


def _build_generative_replay(name: str, p: dict, solver: torch.nn.Module, ctx: StrategyContext, common: dict,
                             extra_plugins: list) -> SupervisedTemplate:
    """ali_replay (an ALI) or gan_replay (the encoder-free GAN) behind ALIReplayPlugin, as the recipe `p` says."""
    recipe = OmegaConf.to_object(as_config(SCHEMAS[name], p, where=f"{name} params"))
    ali = build_ali(ctx.input_shape, recipe.model, num_classes=ctx.num_classes, encoder=name == "ali_replay")
    replay = _replay_config(recipe, ctx)
    solver_input = check_choice("solver_input", recipe.solver_input, SOLVER_INPUTS)
    if solver_input != "image":
        if name != "ali_replay":
            raise ConfigError(f"solver_input={solver_input} needs an encoder: use ali_replay, not gan_replay")
        if solver_input == "latent":
            logger.info("solver_input=latent: the benchmark's solver is replaced by an MLP head on the ALI's codes")
            model = LatentSolver(ali, code_head(ali.latent_dim, ctx.num_classes, recipe.latent_head_width))
        else:
            model = ReconstructionSolver(ali, solver)
        common = {**common, **_ali_fed_solver(model, ctx)}
    return ALIGenerativeReplay(ali=ali, replay=replay, replay_seed=ctx.seed, plugins=extra_plugins, **common)


def _replay_config(recipe: Any, ctx: StrategyContext) -> ReplayConfig:
    """The plugin's settings out of a recipe; a null `ali_epochs` takes the benchmark's generator budget."""
    replay = ReplayConfig(**{key: getattr(recipe, key) for key in replay_fields()})
    if replay.ali_epochs is None:  # None there too: every solver epoch
        replay.ali_epochs = ctx.generator_epochs
    return replay


def _build_dgr(p: dict, ctx: StrategyContext, common: dict, extra_plugins: list) -> SupervisedTemplate:
    """Naive plus ALIReplayPlugin with a VAE as the generator: the same replay as ali_replay, another generator."""
    recipe = OmegaConf.to_object(as_config(DGRRecipe, p, where="dgr params"))
    vae = VAE(ctx.input_shape, latent_dim=recipe.model.latent_dim, hidden=recipe.model.hidden, arch=recipe.model.arch)
    plugin = ALIReplayPlugin(vae, _replay_config(recipe, ctx), seed=ctx.seed)
    return Naive(plugins=extra_plugins + [plugin], **common)


def _ali_fed_solver(model: ALIFedSolver, ctx: StrategyContext) -> dict:
    """The model and optimiser of a solver fed through the ALI (its round trip or its codes)."""
    if ctx.scenario != "class_incremental":
        raise ConfigError(f"solver_input={model.solver_input} supports class_incremental streams only (the "
                          "solver gets no task labels); use solver_input=image for task_incremental")
    return {"model": model, "optimizer": torch.optim.Adam(model.parameters(), lr=ctx.lr)}


def er_buffer_size(p: Mapping, input_shape) -> int:
    """er's buffer: `mem_size` examples, or as many as `memory_bytes` holds (uint8 pixels + int64 label)."""
    if p.get("memory_bytes") is None:
        return int(p["mem_size"])
    per_example = _stored_bytes(math.prod(int(s) for s in input_shape))
    size = int(p["memory_bytes"]) // per_example
    if size < 1:
        raise ConfigError(f"er memory_bytes={p['memory_bytes']} holds no example of shape {tuple(input_shape)} "
                          f"({per_example} bytes each); raise it or set mem_size")
    return size


def _build_vae_replay(p: dict, ctx: StrategyContext, common: dict, extra_plugins: list,
                      generator_epochs: int) -> SupervisedTemplate:
    """Avalanche's GenerativeReplay with our shape-agnostic VAE trained by Avalanche's VAETraining."""
    vae = VAE(ctx.input_shape, latent_dim=int(p["latent_dim"]), hidden=int(p["hidden"]), arch=p["arch"])
    gen_optimizer = torch.optim.Adam(vae.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]))
    replay_size = p.get("replay_size")
    generator_strategy = VAETraining(
        model=vae, optimizer=gen_optimizer, criterion=VAE_loss, train_mb_size=ctx.train_mb_size,
        train_epochs=generator_epochs, eval_mb_size=ctx.eval_mb_size, device=common["device"],
        plugins=[GenerativeReplayPlugin(replay_size=replay_size)], evaluator=_silent_evaluator)
    # The recorder goes first so that it sees each batch before Avalanche extends it.
    plugins = [UnitStreamOnly("vae_replay", "dgr (the same conv VAE, its replay in the stream's space)"),
               ReplayRecorder()] + extra_plugins
    return GenerativeReplay(generator_strategy=generator_strategy, replay_size=replay_size, plugins=plugins, **common)


# --------------------------------------------------------------------------- inspection


def _find(strategy, kind) -> Optional[SupervisedPlugin]:
    """The first plugin of a type among the strategy's plugins."""
    return next((p for p in strategy.plugins if isinstance(p, kind)), None)


def _stored_bytes(pixels: int) -> int:
    """Bytes one stored example of `pixels` values takes: uint8 pixels plus an int64 label."""
    return pixels * PIXEL_BYTES + LABEL_BYTES


def _example_bytes(dataset) -> int:
    """Bytes one stored example of `dataset` takes (see `_stored_bytes`)."""
    return _stored_bytes(int(dataset[0][0].numel()))


def _memory(**bytes_by_kind: int) -> dict[str, int]:
    """Kept bytes by kind: every one of MEMORY_KINDS, in order (0 where not given)."""
    return {kind: int(bytes_by_kind.get(kind, 0)) for kind in MEMORY_KINDS}


def strategy_memory(strategy) -> dict[str, int]:
    """The bytes `strategy_memory_bytes` counts, by kind (MEMORY_KINDS); they add up to it.

    generator: the weights of the generative model (the ALI's or GAN's incl. the
    discriminator, dgr's and vae_replay's VAE, avalanche_gr's MlpVAE).
    stored_examples: real examples or what stands for them: er's buffer and joint's data
    (uint8 images plus int64 labels), the latent memory's encoder codes of real images
    (float16) and their labels (int16).
    statistics: what a replay source keeps about the classes instead of examples: the
    per-class Gaussians' means and (co)variances (float32).
    teacher: the frozen previous solver kept to label, filter or distil replay (ali_replay's
    solver labels, Avalanche's GenerativeReplay). It is a copy of the solver, not a memory of
    the data, so it has a kind of its own; the first three are what the method keeps of past data.
    """
    plugin = _find(strategy, ALIReplayPlugin)
    if plugin is not None:
        generator, kept, teacher = plugin.generator.nbytes, plugin.source.nbytes, plugin.teacher_nbytes
        if isinstance(plugin.source, LatentMemorySource):
            return _memory(generator=generator, stored_examples=kept, teacher=teacher)
        return _memory(generator=generator, statistics=kept, teacher=teacher)
    generative = _find(strategy, GenerativeReplayPlugin)
    if generative is not None:
        generator = generative.generator_strategy.model if generative.generator_strategy else None
        return _memory(generator=module_nbytes(generator), teacher=module_nbytes(strategy.model))
    replay = _find(strategy, ReplayPlugin)
    if replay is not None:
        buffer = replay.storage_policy.buffer
        return _memory(stored_examples=len(buffer) * _example_bytes(buffer) if len(buffer) else 0)
    if isinstance(strategy, Cumulative):
        data = strategy.dataset
        return _memory(stored_examples=len(data) * _example_bytes(data) if data is not None and len(data) else 0)
    return _memory()


def strategy_memory_bytes(strategy) -> int:
    """Bytes a strategy keeps between experiences besides the solver itself.

    naive: 0. joint: every past example; er: the buffer's examples; both counted as
    uint8 images plus int64 labels. ali_replay / gan_replay / dgr: the ALI's (GAN's, VAE's) weights
    incl. the discriminator, stored codes (float16) and labels (int16), Gaussian
    statistics (float32), plus the frozen previous solver when labels come from it.
    vae_replay and avalanche_gr: the VAE's weights plus the frozen previous solver Avalanche
    labels replay with. Frozen copies of the generator used within an experience are counted
    for no method. `strategy_memory` gives the same bytes by kind.
    """
    return sum(strategy_memory(strategy).values())


def replay_preview(strategy) -> Optional[tuple[Tensor, Tensor]]:
    """Up to 64 of the last replayed images and their labels (CPU), or None if nothing was replayed."""
    plugin = _find(strategy, ALIReplayPlugin)
    if plugin is not None:
        return plugin.last_replay
    recorder = _find(strategy, ReplayRecorder)  # MNISTNormalisedInput (avalanche_gr) is one too
    if recorder is not None:
        return recorder.last_replay
    replay = _find(strategy, ReplayPlugin)
    if replay is not None and len(replay.storage_policy.buffer):
        buffer = replay.storage_policy.buffer
        items = [buffer[i] for i in range(min(PREVIEW_SIZE, len(buffer)))]
        return torch.stack([it[0] for it in items]), torch.as_tensor([int(it[1]) for it in items])
    return None
