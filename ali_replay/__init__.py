"""ALI (Adversarially Learned Inference) as a generative replay component for continual learning."""
import warnings

# Avalanche's import warns about optional quadratic-programming solvers that nothing here uses.
warnings.filterwarnings("ignore", message="no QP solver found")

from ali_replay.ali import ALI, build_ali
from ali_replay.config import ModelConfig, OptimConfig
from ali_replay.data import DataSplits, ImageDataset, load_dataset
from ali_replay.errors import CheckpointError, ConfigError, DataError, ShapeError, UserError
from ali_replay.update import ALIOptimizers, make_optimizers, train_step

__version__ = "0.1.0"

__all__ = [
    "ALI", "build_ali", "ModelConfig", "OptimConfig", "DataSplits", "ImageDataset", "load_dataset",
    "UserError", "ConfigError", "DataError", "CheckpointError", "ShapeError",
    "ALIOptimizers", "make_optimizers", "train_step",
]
