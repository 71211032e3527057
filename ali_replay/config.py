"""Typed, validated configuration: OmegaConf files plus dot-list overrides."""
from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ali_replay.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Which data set to read and where from."""

    name: str = "digits"
    root: str = "data"
    path: Optional[str] = None
    download: bool = False


@dataclass
class ModelConfig:
    """The ALI networks: preset by input shape, latent size, conditioning."""

    preset: str = "auto"  # auto | mlp | conv28 | conv32
    latent_dim: int = 32
    conditional: bool = False
    width: float = 1.0  # channel/unit multiplier: < 1 trains a narrow network on a CPU
    hidden: int = 512  # hidden units of the mlp preset
    dropout: float = 0.2  # discriminator dropout (the ALI paper's regulariser)


@dataclass
class OptimConfig:
    """Adam settings and loss weights of one ALI update."""

    lr_d: float = 1e-4
    lr_g: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    cycle_x: float = 1.0  # ALICE-style L1 weight on |x - G_x(G_z(x))|
    cycle_z: float = 1.0  # ALICE-style L1 weight on |z - G_z(G_x(z))|
    update_order: str = "alternating"  # alternating: D steps, then G against the updated D; simultaneous: both
    # players from one discriminator pass (the ALI authors' recipe; one D forward fewer per update)
    precision: str = "float32"  # bfloat16: forward passes under bf16 autocast (faster on CPUs with bf16 units)


@dataclass
class TrainConfig:
    """The standalone trainer's loop."""

    epochs: int = 30
    batch_size: int = 64
    lr: Optional[float] = None  # sets both optim.lr_d and optim.lr_g when given
    max_steps: Optional[int] = None  # stop after this many updates (None: run every epoch)
    log_every: int = 50
    image_every: int = 1  # write pictures every N epochs (and always at the end)


@dataclass
class EvalConfig:
    """What `ali-replay eval-ali` measures."""

    labels_per_class: Optional[int] = None  # None: every training label (the probe protocol's 'all')
    probe_train_size: int = 10000  # cap on probe training examples, for speed
    n_samples: int = 10000  # prior samples the judge labels for the class histogram


@dataclass
class GuardConfig:
    """Divergence detection: when to roll back to the last good epoch and lower the learning rate."""

    enabled: bool = True
    d_loss_min: float = 1e-3  # epoch-mean discriminator loss below this: D has won outright
    diversity_min: float = 0.05  # sample spread / real-image spread below this: the decoder collapsed
    lr_factor: float = 0.5  # learning rates are multiplied by this after each rollback
    max_rollbacks: int = 3  # then training stops with an error


@dataclass
class ALIRunConfig:
    """Everything `ali-replay train-ali` reads."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    seed: int = 0
    device: str = "auto"
    threads: Optional[int] = None  # torch.set_num_threads; None keeps PyTorch's default
    output_dir: str = "runs/ali"


def configs_dir() -> Path:
    """The folder holding the shipped YAML configs (checkout or installed wheel)."""
    checkout = Path(__file__).resolve().parents[1] / "configs"
    if checkout.is_dir():
        return checkout
    return Path(str(importlib.resources.files("ali_replay.configs")))


def resolve_config_path(name_or_path: str | Path, kind: str) -> Path:
    """A config file from a path, or from a name under `configs/<kind>/`."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    shipped = configs_dir() / kind / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in (configs_dir() / kind).glob("*.yaml"))
    raise ConfigError(
        f"config file '{name_or_path}' not found: pass an existing path or one of the "
        f"shipped {kind} configs: {', '.join(names)}"
    )


def _keys(schema: Any, prefix: str = "") -> list[str]:
    """Every dotted key a structured config accepts."""
    keys = []
    for key, value in schema.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, DictConfig):
            keys.extend(_keys(value, dotted + "."))
        else:
            keys.append(dotted)
    return keys


def _explain(error: OmegaConfBaseException, schema: DictConfig, source: str) -> ConfigError:
    """Turn an OmegaConf error into a one-line message naming the key and the fix."""
    key = getattr(error, "full_key", None) or getattr(error, "key", None) or "?"
    text = str(error).splitlines()[0]
    if "not in struct" in text or "Key '" in text and "not" in text:
        accepted = ", ".join(_keys(schema))
        return ConfigError(f"unknown config key '{key}' in {source}; accepted keys: {accepted}")
    try:
        expected = OmegaConf.select(schema, str(key), throw_on_missing=False)
    except OmegaConfBaseException:
        expected = None
    kind = type(expected).__name__ if expected is not None else "the schema's type"
    return ConfigError(f"bad value for config key '{key}' in {source}: {text} (expected {kind})")


def merge_config(
    schema: type | DictConfig,
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> DictConfig:
    """Merge a schema's defaults, a YAML file and `key=value` overrides, validating each."""
    base = schema if isinstance(schema, DictConfig) else OmegaConf.structured(schema)
    OmegaConf.set_struct(base, True)
    merged = base
    if path is not None:
        try:
            loaded = OmegaConf.load(path)
        except Exception as error:  # YAML syntax errors come in many types
            raise ConfigError(f"cannot read config file {path}: {error}") from error
        try:
            merged = OmegaConf.merge(merged, loaded)
        except OmegaConfBaseException as error:
            raise _explain(error, base, str(path)) from error
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.epochs=5)")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as error:
            raise _explain(error, base, f"override '{item}'") from error
    return merged


def load_run_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """The validated config of a standalone ALI training run."""
    config_path = resolve_config_path(path, "ali") if path is not None else resolve_config_path("digits", "ali")
    cfg = merge_config(ALIRunConfig, config_path, overrides)
    if cfg.train.lr is not None:
        cfg.optim.lr_d = cfg.train.lr
        cfg.optim.lr_g = cfg.train.lr
    return cfg
