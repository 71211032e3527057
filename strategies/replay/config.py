"""ReplayConfig: every setting of generative replay in one typed place; its defaults are the default recipe.

The plugin's keyword arguments, the catalogue's accepted keys and the recipes in
configs/strategy/ali_replay.yaml are all read against these dataclasses, so a setting
has one name, one type and one default.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import OmegaConf

from ali_replay.config import (ModelConfig, OptimConfig, at_least, check_ranges, positive, replay_model, typed,
                               within)
from ali_replay.errors import ConfigError
from ali_replay.update import check_optim
from strategies._common import check_choice

SOURCES = ("prior", "class_latent", "latent_memory", "conditional")
LABEL_MODES = ("stored", "solver_soft", "solver_hard")
COVARIANCES = ("diag", "full")
SOLVER_INPUTS = ("image", "reconstruction", "latent")


def replay_optim() -> OptimConfig:
    """The generator's optimiser settings for replay.

    Within one experience a small ALI must learn new classes while replaying old ones: it
    needs a faster rate and a stronger reconstruction term than the standalone trainer's
    defaults (BENCHMARKS.md, "Figures behind the replay defaults"). Forward passes run in
    bfloat16 where the device has bf16 units (`precision: auto`), float32 elsewhere.
    """
    return OptimConfig(lr_d=1e-3, lr_g=1e-3, cycle_x=10.0, cycle_z=1.0, precision="auto")


@dataclass
class ReplayConfig:
    """How ALIReplayPlugin replays; the defaults are the default recipe (`ali_replay`).

    They were chosen on validation data on split MNIST among four configurations per generator
    family (BENCHMARKS.md, "Recipe selection on validation data"): keep the replay the previous
    solver recognises, and give the generator 12 passes per experience of 64 real + 64 replayed
    examples a step. The recipe `unfiltered` in configs/strategy/*.yaml restores the defaults
    before that selection (every replay example kept, one generator step per solver iteration).
    """

    optim: OptimConfig = field(default_factory=replay_optim)  # the generator's two optimizers and its update
    source: Optional[str] = None  # prior | class_latent | latent_memory | conditional; None: conditional for a
    # class-conditional generator, else class_latent (prior for an encoder-free one)
    labels: str = "solver_soft"  # stored | solver_soft (distillation at `temperature`) | solver_hard
    temperature: float = field(default=2.0, metadata=positive())
    memory_bytes: int = field(default=200_000, metadata=at_least(0))  # latent_memory's budget for float16 codes
    covariance: str = "full"  # class_latent: diag | full
    latent_scale: float = field(default=1.0, metadata=positive())  # spread of prior / class_latent draws
    # replay examples made per experience (None: as many as its real ones, at most MAX_EXPERIENCE_REPLAY);
    # a set much larger than the experience keeps the solver from memorising it
    replay_size: Optional[int] = field(default=60_000, metadata=at_least(1))
    # replayed examples per solver step; None: the strategy's train_mb_size
    replay_batch_size: Optional[int] = field(default=None, metadata=at_least(1))
    # real examples per generator step (the mini-batch's first); None: all
    ali_batch_size: Optional[int] = field(default=64, metadata=at_least(1))
    # replayed examples per generator step (the replay batch's first); None: all
    ali_replay_batch_size: Optional[int] = field(default=64, metadata=at_least(1))
    # generator passes per experience; None: one step per solver iteration
    ali_epochs: Optional[int] = field(default=12, metadata=at_least(0))
    # the same in the first experience (real data only); None: ali_epochs
    first_ali_epochs: Optional[int] = field(default=None, metadata=at_least(0))
    filter_replay: bool = True  # keep only replay the previous solver assigns to the class it was made for
    # holding the latent space still (an ALI's encoder; see ali_replay.update.ReplayAnchors): weight of the L1
    # error between the encoder's codes of replayed images and the codes they were decoded from (0: none)
    replay_code_weight: float = field(default=0.0, metadata=at_least(0))
    # weight of the L1 error between the decoder's images of the replayed codes and the replayed images (0: none)
    replay_image_weight: float = field(default=0.0, metadata=at_least(0))
    # experiences the encoder trains in before it is frozen (the sleep phase then keeps the class statistics
    # as they are); None: it trains throughout
    freeze_encoder_after: Optional[int] = field(default=None, metadata=at_least(0))
    # after the encoder is frozen, for a solver that reads codes: whether the generator's decoder and
    # discriminator keep training on decoded replay (false: codes only, nothing decoded but a preview;
    # the head never reads the images, so only the generator's pictures of later classes change)
    train_after_freeze: bool = True
    # from the second experience on, a solver that reads images also learns the generator's round trips
    # G_x(G_z(x)) of the real mini-batch, labelled as the real images, at this weight within the current
    # experience's loss (0: none; 1: the current classes from round trips only). Replay is generated and
    # real data is not, so a solver can learn "generated means an old class" (benchmarks/shortcut_probe.py);
    # round trips of the new classes are meant to take that cue away. Needs a generator with an encoder
    round_trip_weight: float = field(default=0.0, metadata=within(0, 1))
    # for a solver that reads codes, with a source that keeps statistics per class (class_latent,
    # latent_memory): after each experience's sleep its head takes this many steps (mini-batches of the
    # strategy's size, its optimiser) on class-balanced draws of every class seen, the current ones included,
    # labelled by their class, so that old and new classes reach it from the same statistics (taken on the
    # images under the evaluation transforms) whatever the stream's training transforms; 0: none
    head_refit_steps: int = field(default=0, metadata=at_least(0))

    def check(self) -> "ReplayConfig":
        """This config if its values are valid, else a ConfigError naming the setting and the fix."""
        if self.source is not None:
            check_choice("source", self.source, SOURCES)
        check_choice("labels", self.labels, LABEL_MODES)
        check_choice("covariance", self.covariance, COVARIANCES)
        check_optim(self.optim)
        if self.source == "prior" and self.labels == "stored":
            raise ConfigError("source=prior with labels=stored is invalid: prior samples carry no labels; "
                              "use labels=solver_soft or labels=solver_hard")
        if not self.train_after_freeze and self.freeze_encoder_after is None:
            raise ConfigError("train_after_freeze=false acts once the encoder is frozen; set freeze_encoder_after "
                              "(e.g. 1), or train_after_freeze=true")
        check_ranges(OmegaConf.structured(self), type(self))  # the bounds each field declares
        return self


@dataclass
class SolverRecipe(ReplayConfig):
    """A replay strategy's settings with what its solver reads (`ali_replay`, `gan_replay` and `dgr` share it).

    `solver_input` says what the solver is fed: ``image`` the stream's images (replay: decoded
    images); ``reconstruction`` every image through the generator's round trip (the ALI's
    G_x(G_z(x)), the VAE's decoding of its posterior mean: `strategies.ReconstructionSolver`
    around the benchmark's solver); ``latent`` the encoder's codes: the benchmark's solver
    network is then replaced by an MLP head on the codes (`strategies.LatentSolver`, two hidden
    layers of `latent_head_width` ReLU units), and replay feeds it the source's codes directly,
    no image in between. The last two need an unconditional generator with an encoder and a
    class-incremental stream.
    """

    solver_input: str = "image"  # image | reconstruction | latent (see the class docstring)
    # solver_input=latent: hidden units in each of the code head's two layers (it replaces the benchmark's solver)
    latent_head_width: int = field(default=400, metadata=at_least(1))

    def check(self) -> "SolverRecipe":
        """This recipe if its values are valid, else a ConfigError naming the setting and the fix."""
        check_choice("solver_input", self.solver_input, SOLVER_INPUTS)
        super().check()
        return self


@dataclass
class ReplayRecipe(SolverRecipe):
    """`ali_replay`: the replay's settings, the ALI's networks and what the solver reads (`SolverRecipe`)."""

    model: ModelConfig = field(default_factory=replay_model)


def _gan_model() -> ModelConfig:
    """gan_replay's networks: those of ali_replay@prior (unconditional), without the encoder."""
    return ModelConfig(conditional=False, latent_dim=16, hidden=128, width=0.5)


@dataclass
class GANReplayRecipe(ReplayRecipe):
    """`gan_replay`: the same replay with an encoder-free generator (unconditional by default)."""

    model: ModelConfig = field(default_factory=_gan_model)


def replay_fields() -> tuple[str, ...]:
    """The names ReplayConfig accepts (the plugin's keyword arguments)."""
    return tuple(f.name for f in dataclasses.fields(ReplayConfig))


def replay_config(config: Any = None, where: str = "ALIReplayPlugin's settings", **settings) -> ReplayConfig:
    """A checked ReplayConfig: `config` (ReplayConfig, mapping or None) with `settings` on top.

    A partial `optim` mapping overrides only its keys: the others keep `replay_optim()`. A recipe
    (`ReplayRecipe`, `DGRRecipe`) gives its replay settings; its networks are the caller's business.
    """
    if isinstance(config, ReplayConfig):  # a recipe's networks are not replay settings
        config = ReplayConfig(**{key: getattr(config, key) for key in replay_fields()})
        if not settings:
            return config.check()
    return typed(ReplayConfig, config, settings, where=where).check()


@dataclass
class VAEModelConfig:
    """dgr's generator: `strategies.vae.VAE` (convolutions for 28x28 and 32x32 images, else an MLP)."""

    latent_dim: int = field(default=16, metadata=at_least(1))
    hidden: int = field(default=400, metadata=at_least(1))  # MLP width (small images)
    arch: str = "auto"  # auto | mlp | conv


def _vae_optim() -> OptimConfig:
    """A VAE's Adam: lr 1e-3, betas (0.9, 0.999) (only lr_g, the betas and the precision are read)."""
    return OptimConfig(lr_d=1e-3, lr_g=1e-3, beta1=0.9, beta2=0.999, precision="auto")


@dataclass
class DGRRecipe(SolverRecipe):
    """`dgr`: plain generative replay (van de Ven's DGR) in the same plugin, with a VAE as the generator.

    Prior samples labelled by distillation from the previous solver, weighted 1/t, as
    `ali_replay@prior` replays; every other replay setting is the ALI recipes' own.
    """

    optim: OptimConfig = field(default_factory=_vae_optim)
    source: Optional[str] = "prior"
    model: VAEModelConfig = field(default_factory=VAEModelConfig)
