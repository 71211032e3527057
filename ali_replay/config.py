"""Typed, validated configuration: OmegaConf files plus dot-list overrides."""
from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ali_replay.errors import ConfigError

log = logging.getLogger(__name__)


def _plain_number(value: Optional[float]) -> str:
    """A bound as written: whole numbers without a decimal point or exponent."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Bounds:
    """The interval a numeric config value must lie in (None: unbounded on that side)."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False  # True: `low` itself is outside
    high_open: bool = False

    def describe(self) -> str:
        """The condition in words, e.g. 'must be >= 1' or 'must be in [0, 1)'."""
        low, high = _plain_number(self.low), _plain_number(self.high)
        if self.low is not None and self.high is not None:
            return f"must be in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"must be {'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"must be {'<' if self.high_open else '<='} {high}"
        return "must be a finite number"

    def holds(self, value: float) -> bool:
        """Whether `value` is finite and inside the interval."""
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))


# Field metadata, read by `check_ranges`: every numeric key of a schema declares its interval, and
# a path key says whether it names a folder or a file.
def at_least(low: float) -> dict:
    """Metadata: a number >= `low` (None stays allowed where the field is Optional)."""
    return {"bounds": Bounds(low)}


def positive() -> dict:
    """Metadata: a number > 0."""
    return {"bounds": Bounds(0, low_open=True)}


def within(low: float, high: float, low_open: bool = False, high_open: bool = False) -> dict:
    """Metadata: a number inside [low, high] (either end may be open)."""
    return {"bounds": Bounds(low, high, low_open, high_open)}


SEED_RANGE = within(0, 2 ** 32 - 1)  # what NumPy's generator accepts
THREADS = within(1, 1024)  # torch accepts up to 2**31 - 1 and would then try to start that many
FOLDER = {"path": "folder"}
FILE = {"path": "file"}


def _number(default: Any, metadata: dict) -> Any:
    return field(default=default, metadata=metadata)


@dataclass
class DataConfig:
    """Which data set to read and where from."""

    name: str = "digits"
    root: str = field(default="data", metadata=FOLDER)
    path: Optional[str] = field(default=None, metadata=FILE)
    download: bool = False


@dataclass
class ModelConfig:
    """The ALI networks: preset by input shape, latent size, conditioning."""

    preset: str = "auto"  # auto | mlp | conv28 | conv32
    latent_dim: int = _number(32, at_least(1))
    conditional: bool = False
    width: float = _number(1.0, positive())  # channel/unit multiplier: < 1 trains a narrow network on a CPU
    hidden: int = _number(512, at_least(1))  # hidden units of the mlp preset
    dropout: float = _number(0.2, within(0, 1, high_open=True))  # discriminator dropout (the ALI paper's regulariser)


def replay_model() -> ModelConfig:
    """The networks of ALI replay's default recipe: a class-conditional ALI, latent 16, conv presets at half width."""
    return ModelConfig(conditional=True, latent_dim=16, hidden=128, width=0.5)


@dataclass
class OptimConfig:
    """Adam settings and loss weights of one ALI update."""

    lr_d: float = _number(1e-4, positive())
    lr_g: float = _number(1e-4, positive())
    beta1: float = _number(0.5, within(0, 1, high_open=True))
    beta2: float = _number(0.999, within(0, 1, high_open=True))
    cycle_x: float = _number(1.0, at_least(0))  # ALICE-style L1 weight on |x - G_x(G_z(x))|
    cycle_z: float = _number(1.0, at_least(0))  # ALICE-style L1 weight on |z - G_z(G_x(z))|
    update_order: str = "alternating"  # alternating: D steps, then G against the updated D; simultaneous: both
    # players from one discriminator pass (the ALI authors' recipe; one D forward fewer per update)
    # bfloat16: forward passes under bf16 autocast (faster where there are bf16 units); auto: bfloat16 where the
    # device has them (a CUDA GPU that supports it, a CPU with AVX-512 BF16 or AMX), float32 elsewhere
    precision: str = "float32"


@dataclass
class TrainConfig:
    """The standalone trainer's loop."""

    epochs: int = _number(30, at_least(1))
    batch_size: int = _number(64, at_least(1))
    lr: Optional[float] = _number(None, positive())  # sets both optim.lr_d and optim.lr_g when given
    max_steps: Optional[int] = _number(None, at_least(1))  # stop after this many updates (None: run every epoch)
    log_every: int = _number(50, at_least(1))
    image_every: int = _number(1, at_least(1))  # write pictures every N epochs (and always at the end)


@dataclass
class EvalConfig:
    """What `ali-replay eval-ali` measures."""

    # None: every training label (the probe protocol's 'all')
    labels_per_class: Optional[int] = _number(None, at_least(1))
    probe_train_size: int = _number(10000, at_least(1))  # cap on probe training examples, for speed
    n_samples: int = _number(10000, at_least(1))  # prior samples the judge labels for the class histogram


@dataclass
class GuardConfig:
    """Divergence detection: when to roll back to the last good epoch and lower the learning rate."""

    enabled: bool = True
    # epoch-mean discriminator loss below this: D has won outright
    d_loss_min: float = _number(1e-3, at_least(0))
    # sample spread / real-image spread below this: the decoder collapsed
    diversity_min: float = _number(0.05, at_least(0))
    # learning rates are multiplied by this after each rollback
    lr_factor: float = _number(0.5, within(0, 1, low_open=True, high_open=True))
    max_rollbacks: int = _number(3, at_least(0))  # then training stops with an error


@dataclass
class ALIRunConfig:
    """Everything `ali-replay train-ali` reads."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    seed: int = _number(0, SEED_RANGE)
    device: str = "auto"
    threads: Optional[int] = _number(None, THREADS)  # torch.set_num_threads; None keeps PyTorch's default
    output_dir: str = field(default="runs/ali", metadata=FOLDER)


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


def _path_problem(value: str, kind: str) -> Optional[str]:
    """Why `value` cannot be the folder (or file) a path key names; None when it can (or is still absent)."""
    path = Path(value).expanduser()
    if kind == "file":
        return "is a folder, not a file: point it at the file itself" if path.is_dir() else None
    if path.exists():
        return None if path.is_dir() else "is a file, not a folder: point it at a folder"
    for parent in path.parents:  # the folder would be created inside this file
        if parent.exists():
            return None if parent.is_dir() else f"lies inside {parent}, which is a file, not a folder"
    return None


def _schema_fields(schema: type) -> list[tuple[dataclasses.Field, Any]]:
    """A dataclass's fields with their resolved annotations."""
    hints = typing.get_type_hints(schema)
    return [(f, hints.get(f.name)) for f in dataclasses.fields(schema)]


def check_ranges(cfg: DictConfig | Mapping, schema: Optional[type] = None, prefix: str = "") -> None:
    """Raise ConfigError naming the first key whose value lies outside the range its schema field declares.

    `schema` defaults to the structured config's own dataclass. Numeric fields carry `Bounds` in
    their metadata (list fields: bounds for every item), path fields say whether they name a folder
    or a file; None passes wherever the schema allows it.
    """
    if schema is None and isinstance(cfg, DictConfig):
        schema = OmegaConf.get_type(cfg)
    if schema is None or not dataclasses.is_dataclass(schema):
        return
    for spec, hint in _schema_fields(schema):
        if spec.name not in cfg:
            continue
        key, value = f"{prefix}{spec.name}", cfg[spec.name]
        if isinstance(value, (DictConfig, Mapping)):
            nested = hint if dataclasses.is_dataclass(hint) else None
            check_ranges(value, nested, key + ".")
            continue
        if value is None:
            continue
        bounds = spec.metadata.get("bounds")
        if bounds is not None:
            items = list(value) if not isinstance(value, (int, float, str)) else [value]
            for item in items:
                if isinstance(item, bool) or not isinstance(item, (int, float)):
                    continue  # the schema's types reject non-numbers at merge time
                if not bounds.holds(item):
                    raise ConfigError(f"bad value for config key '{key}': {bounds.describe()}, got {item!r}")
        kind = spec.metadata.get("path")
        if kind is not None:
            problem = _path_problem(str(value), kind)
            if problem:
                raise ConfigError(f"bad value for config key '{key}': '{value}' {problem}")


def numeric_fields_without_bounds(schema: type, prefix: str = "") -> list[str]:
    """Dotted keys of int/float fields (nested too) that declare no range: each should declare one."""
    missing = []
    for spec, hint in _schema_fields(schema):
        key = f"{prefix}{spec.name}"
        if dataclasses.is_dataclass(hint):
            missing.extend(numeric_fields_without_bounds(hint, key + "."))
            continue
        leaves = typing.get_args(hint) or (hint,)
        numeric = any(t in (int, float) for t in leaves) or any(
            t in (int, float) for arg in leaves for t in typing.get_args(arg))
        if numeric and "bounds" not in spec.metadata:
            missing.append(key)
    return missing


def merge_config(
    schema: type | DictConfig,
    path: str | Path | None = None,
    overrides: Sequence[Any] = (),
    check: bool = True,
    where: str = "the settings",
) -> DictConfig:
    """Merge a schema's defaults, a YAML file and overrides in order, validating each: the one merge routine.

    An override is a `key=value` string, or a mapping, DictConfig or dataclass instance of the
    schema's keys (nested mappings merge key by key; `where` names such a layer in errors). With
    `check` (the default) the merged values are also checked against the ranges the schema
    declares (`check_ranges`); pass False for an intermediate merge that later overrides complete.
    """
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
        except (TypeError, ValueError) as error:  # e.g. a mapping where the schema has a list
            raise ConfigError(f"cannot merge config file {path} over the schema ({error}); "
                              f"compare its layout with the shipped configs") from error
    for item in overrides:
        if item is None:
            continue
        if isinstance(item, str):
            if "=" not in item:
                raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.epochs=5)")
            layer, source = OmegaConf.from_dotlist([item]), f"override '{item}'"
        else:
            layer, source = _layer(item), where
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as error:
            raise _explain(error, base, source) from error
        except (TypeError, ValueError) as error:  # e.g. `seeds.0=1`: an item of a list set like a key
            raise ConfigError(f"cannot apply {source} ({error}); set a list whole, e.g. seeds=[0,1]") from error
    if check:
        check_ranges(merged)
    return merged


def _layer(item: Any) -> DictConfig:
    """A mapping, DictConfig or dataclass instance as a config layer to merge."""
    if isinstance(item, DictConfig):
        return item
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return OmegaConf.structured(item)
    if isinstance(item, Mapping):
        return OmegaConf.create(dict(item))
    raise ConfigError(f"expected a mapping of settings, got {type(item).__name__}")


def typed(schema: type, *layers: Any, where: str = "the settings") -> Any:
    """An instance of the dataclass `schema`: its defaults with `layers` merged over them (`merge_config`), checked."""
    return OmegaConf.to_object(merge_config(schema, overrides=layers, where=where))


def load_run_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """The validated config of a standalone ALI training run."""
    config_path = resolve_config_path(path, "ali") if path is not None else resolve_config_path("digits", "ali")
    cfg = merge_config(ALIRunConfig, config_path, overrides)
    if cfg.train.lr is not None:
        cfg.optim.lr_d = cfg.train.lr
        cfg.optim.lr_g = cfg.train.lr
    return cfg
