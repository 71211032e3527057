"""ALIReplayPlugin: generative replay's Avalanche callbacks (wake: replay while learning; sleep: refresh)."""
from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any, Optional

import torch
from avalanche.core import SupervisedPlugin

from ali_replay import distributed
from ali_replay.ali import ALI
from ali_replay.errors import ConfigError, ShapeError
from ali_replay.evaluation import batched
from strategies._common import experience_tensors
from strategies.input_space import InputSpace
from strategies.memory import KeptBytes, module_nbytes
from strategies.timing import PhaseSeconds
from strategies.replay import (ClassBook, GeneratorSchedule, Labeller, ReplayBatches, ReplayConfig, ReplayMaker,
                               ReplaySet, StreamSpace, adopt_stream_space, make_generator, make_source,
                               refresh_codes, replay_config, solver_feed)

logger = logging.getLogger(__name__)

MAX_EXPERIENCE_REPLAY = 10000  # replay_size=None: as many as the experience's real examples, at most this many


class ALIReplayPlugin(SupervisedPlugin, supports_distributed=True):
    """Generative replay from an ALI for any SupervisedTemplate (wake: replay; sleep: refresh).

    ``ALIReplayPlugin(ali)`` is the default recipe; `config` (a `ReplayConfig` or a mapping)
    and keyword arguments (its field names) change it, e.g. ``source="latent_memory"``.
    The generator is an ALI (or the encoder-free GAN), or any other behind the interface of
    `strategies.replay.generators` (a `strategies.vae.VAE`: plain generative replay, `dgr`).

    Wake (every experience after the first): a replay set of the old classes is made once,
    before the experience, under no_grad (`strategies.replay.ReplayMaker`); each iteration draws
    a replay mini-batch from it and the solver's loss becomes ``(1/t) * current + (1 - 1/t) *
    replay`` (t: experiences seen, this one included; ``current`` is `strategy.loss` as it stands
    when this plugin's `before_backward` runs, mixed with the loss on the generator's round trips of
    the real mini-batch at `round_trip_weight`). After each solver update the generator takes a
    step on the real mini-batch plus replay, weighted the same way, as its schedule says
    (`strategies.replay.GeneratorSchedule`: passes, freezing, idling); in the first experience it
    sees real data only. Sleep (after each experience): the source carries its statistics into
    the new latent space and adds the new classes'.

    A solver that reads the ALI's codes (a `LatentSolver` over this plugin's ALI) is replayed
    codes straight into its head (`strategies.replay.feeds`); the generator still learns the
    images decoded from them, until `train_after_freeze=False` idles it once its encoder is frozen.

    The generator learns and replays images in [0, 1]; `input_space` maps the stream's images
    there and back (a stream that normalises, as Avalanche's SplitMNIST and SplitCIFAR10 do).
    None: worked out from the first experience (its Normalize, else its images' range), with an
    error naming the fix when it cannot tell; every experience's first mini-batch is checked against it.
    """

    def __init__(self, generator: ALI | Any, config: Optional[ReplayConfig | dict] = None, *, seed: int = 0,
                 input_space: Optional[InputSpace] = None, **settings: Any):
        super().__init__()
        config = replay_config(config, **settings)
        self.generator = make_generator(generator, config.optim)
        self.seed = seed
        self.rng = torch.Generator().manual_seed(seed)  # every replay draw, so a run follows its seed
        self.source = make_source(config, self.generator, self.rng, seed)
        self.config = dataclasses.replace(config, source=self.source.name)
        self.space = StreamSpace(input_space)
        self.book = ClassBook()
        self.labeller = Labeller(config.labels, config.temperature, config.filter_replay)
        self.maker = ReplayMaker(self.generator, self.source, self.labeller, self.book, self.rng)
        self.schedule = GeneratorSchedule(self.generator, self.config, self.space)
        self.feed = None  # how replay reaches the solver: chosen for it in before_training
        self.replay: Optional[ReplaySet] = None  # the experience's replay set
        self.replay_batch: Optional[ReplaySet] = None  # this iteration's draw from it
        self.last_losses: dict[str, torch.Tensor] = {}
        self.phases = PhaseSeconds()  # its replay sets and sleep (replay_making), its generator's steps
        self._batches: Optional[ReplayBatches] = None
        self._real: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # this iteration's real mini-batch
        self._solver: Optional[torch.nn.Module] = None
        self._teacher: Optional[torch.nn.Module] = None  # the solver as it left the latest experience
        self._prev_decoder = None  # the decoder the old statistics were taken with, for the sleep refresh
        self._rank_seeded = False

    # ------------------------------------------------------------------ what it holds
    @property
    def ali(self) -> Optional[ALI]:
        """The generator's ALI (None for another kind of generator)."""
        return getattr(self.generator, "ali", None)

    @property
    def experiences_seen(self) -> int:
        """Distinct experiences trained on so far, the current one included: the t of the 1/t weighting."""
        return self.book.experiences_seen

    @property
    def groups(self) -> list[tuple[int, int]]:
        """The (class, task) pairs seen, in order of arrival."""
        return self.book.groups

    @property
    def input_space(self) -> Optional[InputSpace]:
        """The stream's input space (None until it is given or read off the first experience)."""
        return self.space.space

    @property
    def last_replay(self) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """The first images of the latest replay set and their labels (CPU), or None."""
        return self.maker.last_replay

    @property
    def last_acceptance(self) -> Optional[float]:
        """The share of the latest replay's first draw the previous solver recognised (None: not filtered)."""
        return self.maker.last_acceptance

    def memory(self) -> KeptBytes:
        """Bytes kept besides the solver, by kind: the generator (discriminator included), the source's codes
        or statistics, and the frozen previous solver when it labels or filters replay.

        The frozen copy of the previous decoder used within an experience by the sleep refresh
        is not counted (as Avalanche's frozen generator copy is not).
        """
        teacher = module_nbytes(self._solver) if self.labeller.needs_teacher else 0
        return KeptBytes(generator=self.generator.nbytes, teacher=teacher, **{self.source.memory_kind: self.source.nbytes})

    def nbytes(self) -> int:
        """Every byte `memory` counts."""
        return self.memory().total

    # ------------------------------------------------------------------ callbacks
    def before_training(self, strategy, *args, **kwargs):
        """Move the generator to the strategy's device and choose how replay reaches the solver.

        Under torchrun the generator trains in DistributedDataParallel (gradients averaged over
        processes, as the solver's are), and each process draws its own replay (seed + rank)
        to go with its own shard of the real data.
        """
        self.generator.to(torch.device(strategy.device))
        self._solver = distributed.unwrap(strategy.model)
        _check_optimizer(strategy.optimizer, self.generator)
        self.feed = solver_feed(self._solver, self.generator, self.space)
        if not self.config.train_after_freeze and not self.feed.reads_codes:
            raise ConfigError("train_after_freeze=false is for a solver that reads the ALI's codes (solver_input="
                              "latent, a LatentSolver): this solver learns from the decoded replay; set "
                              "train_after_freeze=true")
        if self.config.head_refit_steps and not (self.feed.reads_codes and self.source.keeps_statistics):
            raise ConfigError("head_refit_steps is for a solver that reads the ALI's codes (a LatentSolver) with a "
                              "source that keeps statistics per class (source=class_latent or latent_memory); "
                              "set head_refit_steps=0")
        if self.config.round_trip_weight and (self.feed.reads_codes or not self.generator.has_encoder):
            raise ConfigError("round_trip_weight is for a solver that reads images and a generator with an encoder "
                              "(an ALI, dgr's VAE): " + ("this solver reads the ALI's codes" if self.feed.reads_codes
                                                         else "this generator has none") + "; set round_trip_weight=0")
        dist_ctx = distributed.current()
        if dist_ctx.enabled and not self._rank_seeded:
            self.generator.distribute()
            self.rng.manual_seed(self.seed + 1_000_003 * dist_ctx.rank)
            self._rank_seeded = True

    def before_training_exp(self, strategy, *args, **kwargs):
        """Note the experience's classes and make its replay set from the other experiences' classes."""
        adopt_stream_space(self._solver, self.space.begin(strategy.experience))
        old = self.book.begin(strategy.experience)
        t = self.book.experiences_seen
        self.replay = self._batches = None
        self.schedule.begin(t)
        if not old:
            return
        if self.source.keeps_statistics and not self.generator.encoder_frozen:  # a frozen encoder needs no refresh
            self._prev_decoder = self.generator.frozen_decoder()
        # Copied after the previous experience, not here: Avalanche has already grown the model's
        # heads for this experience, and untrained new units would teach the student false scores.
        teacher = None
        if self.labeller.needs_teacher:  # the copy kept after the previous experience, else one now
            teacher = self._teacher if self._teacher is not None else _frozen_copy(strategy.model)
        n = self.config.replay_size or min(len(strategy.experience.dataset), MAX_EXPERIENCE_REPLAY)
        with self.phases.timed("replay_making", strategy.device):
            self.replay = self.maker.make(n, old, teacher, self.feed, decode=not self.schedule.idle,
                                          keep_codes=self.schedule.anchored)
        self._batches = ReplayBatches(self.replay, self.rng)
        logger.info("experience %d: %d replay examples of %d old classes (source=%s, labels=%s)", t,
                    len(self.replay), len(old), self.source.name, self.labeller.mode)

    def before_training_iteration(self, strategy, *args, **kwargs):
        """Keep the real mini-batch for the generator and draw this iteration's replay mini-batch."""
        x, y = strategy.mbatch[0], strategy.mbatch[1]
        if tuple(x.shape[1:]) != tuple(self.generator.shape):
            raise ShapeError(f"the generator makes images of shape {tuple(self.generator.shape)} but the stream's "
                             f"images are {tuple(x.shape[1:])}; build the generator for the data's shape")
        self.space.check(x)  # each experience's first mini-batch: a stream whose range changed fails here
        self._real = (x, y)
        self.replay_batch = None
        if self._batches is not None:
            self.replay_batch = self._batches.next(self.config.replay_batch_size or strategy.train_mb_size)

    def before_backward(self, strategy, *args, **kwargs):
        """Weigh the current loss 1/t against the replay mini-batch's loss."""
        if self.replay_batch is None:
            return
        current = real = strategy.loss
        losses = {}
        if self.config.round_trip_weight:
            w = self.config.round_trip_weight
            trips = self._round_trip_loss(strategy)
            current = (1.0 - w) * real + w * trips
            losses["round_trips"] = trips.detach()
        batch = self.replay_batch
        replay = self.labeller.loss(self.feed.logits(strategy.model, self.feed.inputs(batch), batch.tasks), batch)
        t = self.book.experiences_seen
        strategy.loss = current / t + (1.0 - 1.0 / t) * replay
        self.last_losses = {"current": real.detach(), **losses, "replay": replay.detach(),
                            "total": strategy.loss.detach()}

    def _round_trip_loss(self, strategy) -> torch.Tensor:
        """The solver's loss on round trips G_x(G_z(x)) of the real mini-batch, labelled as the real images."""
        x, y = self._real
        with torch.no_grad():
            trips = self.generator.decode(self.generator.encode(self.space.to_unit(x), y), y)
        logits = self.feed.logits(strategy.model, trips, strategy.mb_task_id)
        criterion = getattr(strategy, "_criterion", None) or torch.nn.functional.cross_entropy
        return criterion(logits, y.to(logits.device))

    def after_training_iteration(self, strategy, *args, **kwargs):
        """Wake step: the generator learns the real mini-batch plus (the first examples of) the replay batch."""
        t = self.book.experiences_seen
        if self.schedule.trains(strategy.clock.train_exp_epochs, t):
            with self.phases.timed("generator_steps", strategy.device):
                self.schedule.step(*self._real, self.schedule.replay_for_step(self.replay_batch), t)

    def after_training_exp(self, strategy, *args, **kwargs):
        """The generator's remaining passes (when it has more than the solver), then the sleep refresh."""
        t = self.book.experiences_seen
        extra = self.schedule.extra(strategy.train_epochs, t)
        if extra:
            with self.phases.timed("generator_steps", strategy.device):
                self.schedule.extra_passes(strategy.experience.dataset.train(), strategy.train_mb_size, extra,
                                           self.seed + t, t, self._batches.next if self._batches is not None else None)
        with self.phases.timed("replay_making", strategy.device):  # the sleep phase readies the next replay
            self.sleep(strategy)
        with self.phases.timed("solver_steps", strategy.device):
            self.refit_head(strategy)
        if self.labeller.needs_teacher:
            self._teacher = _frozen_copy(strategy.model)
        self.replay = self._batches = self.replay_batch = self._real = self._prev_decoder = None

    # ------------------------------------------------------------------ sleep
    def sleep(self, strategy) -> None:
        """Carry the source's statistics into the new latent space and add the experience's codes.

        Under a frozen encoder the old statistics stay as they are: its latent space did not move.
        """
        if not self.source.keeps_statistics:
            return
        images, classes, tasks = experience_tensors(strategy.experience)
        ids = self.book.ids_of(classes, tasks)
        codes = batched(lambda x, y: self.generator.encode(self.space.to_unit(x), y), images, classes)
        refresh = None
        if self._prev_decoder is not None:
            def refresh(old_codes, old_ids):
                return refresh_codes(self._prev_decoder, self.generator, old_codes, self.book.classes(old_ids))
        self.source.sleep(codes, ids, refresh)

    def refit_head(self, strategy) -> None:
        """`head_refit_steps` steps of the head on class-balanced draws of every class seen, current ones included.

        The draws come from the source's statistics only, so every class reaches the head the same
        way, and from a generator seeded by the run's seed and the experience (not the process's
        rank), so under torchrun every process takes the same steps and the heads stay equal.
        """
        steps = self.config.head_refit_steps
        if not steps:
            return
        batch = int(strategy.train_mb_size)
        t = self.book.experiences_seen
        rng = torch.Generator().manual_seed(self.seed + 7_919 * t)
        codes, ids = self.source.sample(steps * batch, list(range(len(self.book.groups))), rng=rng)
        order = torch.randperm(len(codes), generator=rng)  # the source draws group by group
        codes, labels = codes[order], self.book.classes(ids[order])
        device = torch.device(strategy.device)
        for z, y in zip(codes.split(batch), labels.split(batch)):
            strategy.optimizer.zero_grad()
            torch.nn.functional.cross_entropy(self._solver.classify_codes(z.to(device)), y.to(device)).backward()
            strategy.optimizer.step()
        logger.info("experience %d: the head took %d steps on draws of all %d classes seen", t, steps,
                    len(self.book.groups))


def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of the solver as it is now: the teacher of the next experience's replay."""
    return copy.deepcopy(distributed.unwrap(model)).eval().requires_grad_(False)


def _check_optimizer(optimizer: torch.optim.Optimizer, generator) -> None:
    """Refuse a solver optimiser that also updates the generator: the plugin trains it with its own."""
    generator_params = {id(p) for p in generator.parameters()}
    shared = sum(1 for group in optimizer.param_groups for p in group["params"] if id(p) in generator_params)
    if shared:
        raise ConfigError(f"the strategy's optimizer holds {shared} parameter tensors of the replay generator; "
                          "build it over the solver's parameters only (e.g. Adam(model.parameters())): the "
                          "plugin trains the generator with its own optimizers")
