"""The replay core behind ALIReplayPlugin, one concern a module.

config        ReplayConfig: every replay setting, typed, defaults = the default recipe
generators    the generator interface (decode, encode, step, nbytes) and the ALI/GAN behind it
sources       prior · conditional · class Gaussian · latent memory: sample, sleep, nbytes
labelling     stored · distilled · hard labels, the solver's replay loss, the filter
replay_set    the examples made once per experience, drawn in mini-batches
"""
from strategies.replay.config import (COVARIANCES, LABEL_MODES, SOLVER_INPUTS, SOURCES, DGRRecipe, GANReplayRecipe,
                                      ReplayConfig, ReplayRecipe, VAEModelConfig, replay_config, replay_fields,
                                      replay_optim)
from strategies.replay.generators import (ALIGenerator, FrozenDecoder, ReplayGenerator, VAEGenerator,
                                          make_generator)
from strategies.replay.labelling import Labeller, class_mask, distillation_loss, keep_recognised
from strategies.replay.replay_set import ReplayBatches, ReplaySet, as_float_images, as_uint8_images
from strategies.replay.sources import (ClassGaussianSource, ConditionalSource, LatentMemorySource, PriorSource,
                                       ReplaySource, balanced_group_ids, default_source, make_source, refresh_codes)

__all__ = [
    "COVARIANCES", "LABEL_MODES", "SOLVER_INPUTS", "SOURCES", "GANReplayRecipe", "ReplayConfig", "ReplayRecipe",
    "replay_config", "replay_fields", "replay_optim", "ALIGenerator", "FrozenDecoder", "ReplayGenerator",
    "VAEGenerator", "make_generator", "DGRRecipe", "VAEModelConfig",
    "Labeller", "class_mask", "distillation_loss", "keep_recognised", "ReplayBatches", "ReplaySet",
    "as_float_images", "as_uint8_images", "ClassGaussianSource", "ConditionalSource", "LatentMemorySource",
    "PriorSource", "ReplaySource", "balanced_group_ids", "default_source", "make_source", "refresh_codes",
]
