"""Continual-learning strategies and plugins: ALI generative replay and the baselines it is compared with."""
from strategies.ali_generative_replay import ALIGenerativeReplay
from strategies.ali_replay_plugin import ALIReplayPlugin, replay_ali
from strategies.ali_training import ALITraining
from strategies.input_space import InputSpace
from strategies.latent_solver import LatentSolver, code_head
from strategies.reconstruction_solver import ReconstructionSolver
from strategies.registry import (STRATEGY_NAMES, StrategyContext, build_strategy, default_recipe, load_strategy_params,
                                 replay_preview, strategy_memory_bytes, strategy_recipes)
from strategies.replay import ReplayConfig
from strategies.vae import VAE

__all__ = [
    "ALIGenerativeReplay", "ALIReplayPlugin", "ALITraining", "InputSpace", "LatentSolver", "ReconstructionSolver",
    "ReplayConfig", "VAE", "code_head", "replay_ali",
    "STRATEGY_NAMES", "StrategyContext", "build_strategy", "default_recipe", "load_strategy_params", "replay_preview",
    "strategy_memory_bytes", "strategy_recipes",
]
