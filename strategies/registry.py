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
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor

from ali_replay.ali import build_ali
from ali_replay.config import ModelConfig, resolve_config_path
from ali_replay.errors import ConfigError
from strategies._common import as_config, check_choice, module_nbytes
from strategies.ali_generative_replay import ALIGenerativeReplay
from strategies.ali_replay_plugin import ALIReplayPlugin
from strategies.reconstruction_solver import ReconstructionSolver
from strategies.vae import VAE

logger = logging.getLogger(__name__)

STRATEGY_NAMES = ("naive", "joint", "er", "vae_replay", "gan_replay", "ali_replay")
SCENARIOS = ("class_incremental", "task_incremental")

# Stored images are counted as uint8 (one byte per pixel value, the dtype the data sets
# hold them in, see ali_replay.data.ImageDataset) plus an int64 label each.
PIXEL_BYTES = 1
LABEL_BYTES = 8
PREVIEW_SIZE = 64

# The keys each strategy's params accept (besides `model` / `optim` where listed).
_ALI_PLUGIN_KEYS = ("source", "labels", "replay_size", "replay_batch_size", "ali_batch_size", "ali_replay_batch_size",
                    "weighting", "temperature", "memory_bytes", "covariance", "latent_scale",
                    "ali_steps_per_iteration", "ali_epochs", "first_ali_epochs", "pure_replay_epochs", "filter_replay")
_ACCEPTED = {
    "naive": (),
    "joint": (),
    "er": ("mem_size", "memory_bytes"),
    "vae_replay": ("latent_dim", "hidden", "arch", "lr", "weight_decay", "replay_size"),
    "gan_replay": ("model", "optim") + tuple(k for k in _ALI_PLUGIN_KEYS if k != "source"),
    "ali_replay": ("model", "optim", "solver_input") + _ALI_PLUGIN_KEYS,
}
SOLVER_INPUTS = ("image", "reconstruction")  # ali_replay's solver reads images, or the ALI's round trip of them


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


# --------------------------------------------------------------------------- configs


def _split_spec(spec: str) -> tuple[str, Optional[str]]:
    """'name@variant' -> (name, variant or None), the name checked."""
    name, _, variant = str(spec).partition("@")
    name = name.strip()
    if name not in STRATEGY_NAMES:
        raise ConfigError(f"unknown strategy {name!r}; valid strategies: {', '.join(STRATEGY_NAMES)}")
    return name, (variant.strip() or None) if variant else None


def _load_file(name: str) -> DictConfig:
    """configs/strategy/<name>.yaml as a DictConfig with `params` and `variants`."""
    path = resolve_config_path(name, "strategy")
    try:
        cfg = OmegaConf.load(path)
    except Exception as error:  # YAML errors come in many types
        raise ConfigError(f"cannot read strategy config {path}: {error}") from error
    extra = set(cfg.keys()) - {"params", "variants"}
    if extra:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(extra)}; accepted: params, variants")
    cfg.params = cfg.get("params") or {}
    cfg.variants = cfg.get("variants") or {}
    return cfg


def strategy_variants(name: str) -> list[str]:
    """The variant names configs/strategy/<name>.yaml offers."""
    name, _ = _split_spec(name)
    return list(_load_file(name).variants.keys())


def load_strategy_params(spec: str) -> tuple[str, DictConfig]:
    """'ali_replay@latent_memory' -> ('ali_replay', the defaults merged with that variant's overrides)."""
    name, variant = _split_spec(spec)
    cfg = _load_file(name)
    params = cfg.params
    if variant is not None:
        if variant not in cfg.variants:
            valid = ", ".join(cfg.variants.keys()) or "(none)"
            raise ConfigError(f"unknown variant {variant!r} of strategy {name}; valid variants: {valid}")
        params = OmegaConf.merge(params, cfg.variants[variant])
    _check_keys(name, params)
    return name, params


def _check_keys(name: str, params: Mapping) -> None:
    """ConfigError for a key the strategy does not accept."""
    unknown = sorted(set(params.keys()) - set(_ACCEPTED[name]))
    if unknown:
        accepted = ", ".join(_ACCEPTED[name]) or "(none)"
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for strategy {name}; accepted: {accepted}")


def _params(name: str, params: Optional[Mapping]) -> dict:
    """The file's defaults with `params` merged on top, as a plain dict."""
    _, defaults = load_strategy_params(name)
    if params is not None:
        _check_keys(name, params)
        try:
            defaults = OmegaConf.merge(defaults, OmegaConf.create(
                OmegaConf.to_container(params, resolve=True) if isinstance(params, DictConfig) else dict(params)))
        except OmegaConfBaseException as error:
            raise ConfigError(f"bad parameters for strategy {name}: {error}") from error
    return OmegaConf.to_container(defaults, resolve=True)


# --------------------------------------------------------------------------- building


class _ReplayRecorder(SupervisedPlugin):
    """Keeps the first replayed images of each experience of Avalanche's GenerativeReplay (for plots).

    It must run before GenerativeReplayPlugin: it notes the real batch size, and the
    replay Avalanche appends after it is read at `before_forward`.
    """

    def __init__(self):
        super().__init__()
        self.last_replay: Optional[tuple[Tensor, Tensor]] = None
        self._n_real = 0
        self._pending = False

    def before_training_exp(self, strategy, *args, **kwargs):
        self._pending = True

    def before_training_iteration(self, strategy, *args, **kwargs):
        self._n_real = len(strategy.mbatch[0])

    def before_forward(self, strategy, *args, **kwargs):
        if self._pending and len(strategy.mb_x) > self._n_real:
            x, y = strategy.mb_x[self._n_real:], strategy.mb_y[self._n_real:]
            self.last_replay = (x[:PREVIEW_SIZE].detach().cpu(), y[:PREVIEW_SIZE].detach().long().cpu())
            self._pending = False


def _silent_evaluator() -> EvaluationPlugin:
    """An evaluator without metrics or loggers, for the generator's own strategy."""
    return EvaluationPlugin(loggers=[])


def build_strategy(name: str, solver: torch.nn.Module, params: Optional[Mapping], ctx: StrategyContext
                   ) -> SupervisedTemplate:
    """A ready-to-train strategy `name` for `solver` (Adam at ctx.lr), params over the file's defaults."""
    if "@" in str(name):
        name, variant_params = load_strategy_params(name)
        params = variant_params if params is None else OmegaConf.merge(variant_params, params)
    name, _ = _split_spec(name)
    check_choice("scenario", ctx.scenario, SCENARIOS)
    p = _params(name, params)
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
        elif name == "vae_replay":
            strategy = _build_vae_replay(p, ctx, common, extra_plugins, generator_epochs)
        else:
            model_cfg = as_config(ModelConfig, p.pop("model", None), where=f"{name} params 'model'")
            encoder = name == "ali_replay"
            ali = build_ali(ctx.input_shape, model_cfg, num_classes=ctx.num_classes, encoder=encoder)
            replay = {k: v for k, v in p.items() if k in _ALI_PLUGIN_KEYS}
            replay["optim_cfg"] = p.get("optim")
            replay["seed"] = ctx.seed
            if replay.get("ali_epochs") is None:
                replay["ali_epochs"] = ctx.generator_epochs
            if name == "gan_replay":
                replay["source"] = "conditional" if model_cfg.conditional else "prior"
            if check_choice("solver_input", p.get("solver_input", "image"), SOLVER_INPUTS) == "reconstruction":
                common = {**common, **_reconstruction_solver(ali, solver, ctx)}
            strategy = ALIGenerativeReplay(ali=ali, replay=replay, plugins=extra_plugins, **common)
    strategy.strategy_name = name
    strategy.strategy_params = p
    logger.info("built strategy %s with %s", name, p)
    return strategy


def _reconstruction_solver(ali, solver: torch.nn.Module, ctx: StrategyContext) -> dict:
    """The model and optimiser of `solver` fed the ALI's reconstructions (ReconstructionSolver)."""
    if ctx.scenario != "class_incremental":
        raise ConfigError("solver_input=reconstruction supports class_incremental streams only (the wrapped "
                          "solver gets no task labels); use solver_input=image for task_incremental")
    model = ReconstructionSolver(ali, solver)
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
    plugins = [_ReplayRecorder()] + extra_plugins
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


def strategy_memory_bytes(strategy) -> int:
    """Bytes a strategy keeps between experiences besides the solver itself.

    naive: 0. joint: every past example; er: the buffer's examples; both counted as
    uint8 images plus int64 labels. ali_replay / gan_replay: the ALI's (GAN's) weights
    incl. the discriminator, stored codes (float16) and labels (int16), Gaussian
    statistics (float32), plus the frozen previous solver when labels come from it.
    vae_replay: the VAE's weights plus the frozen previous solver Avalanche labels
    replay with. Frozen copies of the generator used within an experience are counted
    for no method.
    """
    plugin = _find(strategy, ALIReplayPlugin)
    if plugin is not None:
        return plugin.memory_bytes()
    generative = _find(strategy, GenerativeReplayPlugin)
    if generative is not None:
        generator = generative.generator_strategy.model if generative.generator_strategy else None
        return module_nbytes(generator) + module_nbytes(strategy.model)
    replay = _find(strategy, ReplayPlugin)
    if replay is not None:
        buffer = replay.storage_policy.buffer
        return len(buffer) * _example_bytes(buffer) if len(buffer) else 0
    if isinstance(strategy, Cumulative):
        data = strategy.dataset
        return len(data) * _example_bytes(data) if data is not None and len(data) else 0
    return 0


def replay_preview(strategy) -> Optional[tuple[Tensor, Tensor]]:
    """Up to 64 of the last replayed images and their labels (CPU), or None if nothing was replayed."""
    plugin = _find(strategy, ALIReplayPlugin)
    if plugin is not None:
        return plugin.last_replay
    recorder = _find(strategy, _ReplayRecorder)
    if recorder is not None:
        return recorder.last_replay
    replay = _find(strategy, ReplayPlugin)
    if replay is not None and len(replay.storage_policy.buffer):
        buffer = replay.storage_policy.buffer
        items = [buffer[i] for i in range(min(PREVIEW_SIZE, len(buffer)))]
        return torch.stack([it[0] for it in items]), torch.as_tensor([int(it[1]) for it in items])
    return None
