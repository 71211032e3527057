"""The replay core behind ALIReplayPlugin, one concern a module.

config        ReplayConfig: every replay setting, typed, defaults = the default recipe
generators    the generator interface (decode, encode, step, nbytes, ...) and the ALI/GAN/VAE behind it
sources       prior · conditional · class Gaussian · latent memory: sample, sleep, nbytes
classes       the (class, task) groups met so far and the experience of each
feeds         the stream's input space; how replay reaches the solver (images, or codes)
labelling     stored · distilled · hard labels, the solver's replay loss, the filter
maker         the replay set of an experience: draw, decode, label, filter, shuffle, preview
schedule      the generator's passes, its wake step, freezing and idling
replay_set    the examples made once per experience, drawn in mini-batches
"""
from strategies.replay.classes import ClassBook
from strategies.replay.config import (COVARIANCES, LABEL_MODES, SOLVER_INPUTS, SOURCES, DGRRecipe, GANReplayRecipe,
                                      ReplayConfig, ReplayRecipe, SolverRecipe, VAEModelConfig, replay_config,
                                      replay_fields, replay_optim)
from strategies.replay.feeds import CodeFeed, ImageFeed, StreamSpace, adopt_stream_space, solver_feed
from strategies.replay.generators import (GENERATOR_MEMBERS, ALIGenerator, FrozenDecoder, ReplayGenerator,
                                          VAEGenerator, make_generator)
from strategies.replay.labelling import Labeller, class_mask, distillation_loss, keep_recognised
from strategies.replay.maker import ReplayMaker
from strategies.replay.replay_set import ReplayBatches, ReplaySet, as_float_images, as_uint8_images
from strategies.replay.schedule import GeneratorSchedule
from strategies.replay.sources import (ClassGaussianSource, ConditionalSource, LatentMemorySource, PriorSource,
                                       ReplaySource, balanced_group_ids, default_source, make_source, refresh_codes)

__all__ = [
    "ClassBook", "COVARIANCES", "LABEL_MODES", "SOLVER_INPUTS", "SOURCES", "DGRRecipe", "GANReplayRecipe",
    "ReplayConfig", "ReplayRecipe", "SolverRecipe", "VAEModelConfig", "replay_config", "replay_fields", "replay_optim",
    "CodeFeed", "ImageFeed", "StreamSpace", "adopt_stream_space", "solver_feed",
    "GENERATOR_MEMBERS", "ALIGenerator", "FrozenDecoder", "ReplayGenerator", "VAEGenerator", "make_generator",
    "Labeller", "class_mask", "distillation_loss", "keep_recognised", "ReplayMaker",
    "ReplayBatches", "ReplaySet", "as_float_images", "as_uint8_images", "GeneratorSchedule",
    "ClassGaussianSource", "ConditionalSource", "LatentMemorySource", "PriorSource", "ReplaySource",
    "balanced_group_ids", "default_source", "make_source", "refresh_codes",
]
