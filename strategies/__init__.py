"""Continual-learning strategies and plugins: ALI generative replay and the baselines it is compared with."""
from strategies.ali_generative_replay import ALIGenerativeReplay
from strategies.ali_replay_plugin import ALIReplayPlugin
from strategies.ali_training import ALITraining
from strategies.building import build_strategy
from strategies.catalogue import ResolvedSpec, kind, load_strategy_params, resolve
from strategies.generative_replay import replay_ali
from strategies.input_space import InputSpace
from strategies.inspection import replay_preview, strategy_memory, strategy_memory_bytes, strategy_phases
from strategies.kind import SCENARIOS, StrategyContext, StrategyKind
from strategies.latent_solver import LatentSolver, code_head
from strategies.memory import MEMORY_KINDS, KeptBytes
from strategies.recipes import STRATEGY_NAMES, default_recipe, strategy_recipes
from strategies.reconstruction_solver import ReconstructionSolver
from strategies.replay import ReplayConfig
from strategies.timing import PHASES, SolverTimer
from strategies.vae import VAE

__all__ = [
    "ALIGenerativeReplay", "ALIReplayPlugin", "ALITraining", "InputSpace", "LatentSolver", "ReconstructionSolver",
    "ReplayConfig", "VAE", "code_head", "replay_ali", "PHASES", "SolverTimer",
    "MEMORY_KINDS", "SCENARIOS", "STRATEGY_NAMES", "KeptBytes", "ResolvedSpec", "StrategyContext", "StrategyKind",
    "build_strategy", "default_recipe", "kind", "load_strategy_params", "replay_preview", "resolve",
    "strategy_memory", "strategy_memory_bytes", "strategy_phases", "strategy_recipes",
]
