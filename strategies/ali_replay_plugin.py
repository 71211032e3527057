"""Generative replay with an ALI: wake (replay while learning) and sleep (refresh latent statistics)."""
from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any, Optional

import torch
from avalanche.core import SupervisedPlugin
from torch.utils.data import DataLoader, DistributedSampler

from ali_replay import distributed
from ali_replay.ali import ALI, build_ali
from ali_replay.errors import ConfigError, ShapeError
from ali_replay.evaluation import batched
from ali_replay.update import ReplayAnchors
from strategies._common import experience_groups, experience_tensors, module_nbytes
from strategies.input_space import InputSpace, infer_input_space
from strategies.latent_solver import LatentSolver
from strategies.reconstruction_solver import ALIFedSolver
from strategies.replay import (ALIGenerator, Labeller, ReplayBatches, ReplayConfig, ReplayRecipe, ReplaySet,
                               as_uint8_images, balanced_group_ids, keep_recognised, make_generator, make_source,
                               refresh_codes, replay_config)

logger = logging.getLogger(__name__)

MAX_EXPERIENCE_REPLAY = 10000  # replay_size=None: as many as the experience's real examples, at most this many
PREVIEW_SIZE = 64


def replay_ali(shape, num_classes: Optional[int] = None, recipe: Optional[ReplayRecipe] = None, *,
               conditional: Optional[bool] = None) -> ALI:
    """The ALI of a replay recipe (default: the default recipe's, `ReplayRecipe().model`) for images of `shape`.

    `num_classes` is the stream's class count (e.g. `benchmark.n_classes`); a class-conditional
    recipe refuses to guess it. `conditional=False` drops the class input (for Avalanche's
    `GenerativeReplay`, whose replay carries no labels).
    """
    if recipe is None:
        from strategies.registry import default_recipe, shape_key  # the registry imports this module

        shape_recipe = default_recipe("ali_replay", shape)
        if shape_recipe is not None:
            logger.warning("on %s images the recipe chosen on validation data is ali_replay@%s, whose solver reads "
                           "the ALI's codes: build it with strategies.build_strategy('ali_replay', ...) or a "
                           "LatentSolver (README.md); this ALI replays pixels (the default image recipe)",
                           shape_key(shape), shape_recipe)
    model = (recipe or ReplayRecipe()).model
    if conditional is not None:
        model = dataclasses.replace(model, conditional=conditional)
    return build_ali(tuple(shape), model, num_classes=num_classes)


class ALIReplayPlugin(SupervisedPlugin, supports_distributed=True):
    """Generative replay from an ALI for any SupervisedTemplate (wake: replay; sleep: refresh).

    ``ALIReplayPlugin(ali)`` is the default recipe; `config` (a `ReplayConfig` or a mapping)
    and keyword arguments (its field names) change it, e.g. ``source="latent_memory"``.
    The generator is an ALI (or the encoder-free GAN), or any other behind the interface of
    `strategies.replay.generators` (a `strategies.vae.VAE`: plain generative replay, `dgr`).

    Wake (every experience after the first): a replay set of the old classes is made once,
    before the experience, under no_grad; each iteration draws a replay mini-batch from it
    and the solver's loss becomes ``(1/t) * current + (1 - 1/t) * replay`` (t: experiences
    seen, this one included; ``current`` is `strategy.loss` as it stands when this plugin's
    `before_backward` runs). After each solver update the generator takes one step on the
    real mini-batch plus replay, weighted the same way; in the first experience it sees real
    data only. Sleep (after each experience): the source carries its statistics into the
    new latent space and adds the new classes'.

    A solver that reads the ALI's codes (`LatentSolver` over this plugin's ALI) is replayed
    codes: the replay set keeps the codes the source drew beside the images decoded from
    them, the solver's replay loss feeds the codes straight to its `classify_codes`, and
    the generator still learns the decoded images (so that its encoder keeps the old
    classes where their codes were drawn).

    The latent space can be held still for such a solver (or for a source that refreshes
    codes) in two ways. `replay_code_weight` adds to each generator step on replay the sleep
    phase of a Helmholtz machine: the encoder's codes of the replayed images are pulled to
    the codes they were decoded from (`ali_replay.update.ReplayAnchors`; `replay_image_weight`
    likewise pulls the decoder's images of those codes to the replayed ones).
    `freeze_encoder_after` stops training the encoder after that many experiences: the codes
    of old classes then stay where their statistics were taken, and the sleep phase keeps
    those statistics as they are instead of carrying them through a round trip.
    With a solver that reads codes, `train_after_freeze=False` then idles the generator: no
    more generator steps and no decoded replay (the head is fed the drawn codes; only a preview
    of them is decoded), which takes the decoding and the ALI's training out of every
    experience after the freeze.

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
        self.rng = torch.Generator().manual_seed(seed)  # every replay draw, so a run follows its seed
        self.source = make_source(config, self.generator, self.rng, seed)
        self.config = dataclasses.replace(config, source=self.source.name)
        self.labeller = Labeller(config.labels, config.temperature, config.filter_replay)
        self._check_latent_settings(config)
        self.seed = seed
        if input_space is not None and not isinstance(input_space, InputSpace):
            raise ConfigError("input_space must be a strategies.InputSpace (e.g. InputSpace(mean=..., std=...)) "
                              f"or None, got {type(input_space).__name__}")
        self.input_space = input_space
        self.labeller.solver_space = input_space or InputSpace()

        self.groups: list[tuple[int, int]] = []  # (class, task) pairs seen, in order of arrival; ids index it
        self._experience_groups: dict[Any, list[tuple[int, int]]] = {}  # experience id -> its groups
        self.replay: Optional[ReplaySet] = None
        self.replay_batch: Optional[ReplaySet] = None
        self.last_replay: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # preview: images, labels (CPU)
        self.last_acceptance: Optional[float] = None  # share of the latest replay's first draw the teacher recognised
        self.last_losses: dict[str, torch.Tensor] = {}
        self._batches: Optional[ReplayBatches] = None
        self._old_groups: list[tuple[int, int]] = []
        self._prev_decoder = None
        self._solver: Optional[torch.nn.Module] = None
        self._teacher: Optional[torch.nn.Module] = None  # the solver as it left the latest experience
        self._device = torch.device("cpu")
        self._epoch = 0
        self._real: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self._shape_checked = False
        self._space_checked = False
        self._distributed = False

    @property
    def ali(self) -> Optional[ALI]:
        """The generator's ALI (None for another kind of generator)."""
        return getattr(self.generator, "ali", None)

    @property
    def experiences_seen(self) -> int:
        """Distinct experiences trained on so far, the current one included: the t of the 1/t weighting."""
        return len(self._experience_groups)

    @property
    def current_ali_epochs(self) -> Optional[int]:
        """The generator's passes in the experience under way: `first_ali_epochs` in the first, else `ali_epochs`."""
        if self.experiences_seen <= 1 and self.config.first_ali_epochs is not None:
            return self.config.first_ali_epochs
        return self.config.ali_epochs

    def nbytes(self) -> int:
        """Bytes the method keeps besides the solver: the generator (discriminator included), the source's
        codes or statistics, and the frozen previous solver when it labels or filters replay.

        The frozen copy of the previous decoder used within an experience by the sleep refresh
        is not counted (as Avalanche's frozen generator copy is not).
        """
        return self.generator.nbytes + self.source.nbytes + self.teacher_nbytes

    @property
    def teacher_nbytes(self) -> int:
        """Bytes of the frozen previous solver kept to label or filter replay (0 when none is needed)."""
        return module_nbytes(self._solver) if self.labeller.needs_teacher else 0

    # ------------------------------------------------------------------ callbacks
    def before_training(self, strategy, *args, **kwargs):
        """Move the generator to the strategy's device and remember the solver (for byte counts).

        Under torchrun the generator trains in DistributedDataParallel (gradients averaged over
        processes, as the solver's are), and each process draws its own replay (seed + rank)
        to go with its own shard of the real data.
        """
        self._device = torch.device(strategy.device)
        self.generator.to(self._device)
        self._solver = distributed.unwrap(strategy.model)
        self._check_optimizer(strategy.optimizer)
        self.labeller.reads_codes = isinstance(self._solver, LatentSolver)
        if self.labeller.reads_codes and self._solver.ali is not self.ali:
            raise ConfigError("the LatentSolver reads the codes of another ALI than the replay generator's, so "
                              "replayed codes would be of another latent space; build both on one ALI: "
                              "LatentSolver(ali, head) and ALIReplayPlugin(ali, ...)")
        if not self.config.train_after_freeze and not self.labeller.reads_codes:
            raise ConfigError("train_after_freeze=false is for a solver that reads the ALI's codes (solver_input="
                              "latent, a LatentSolver): this solver learns from the decoded replay; set "
                              "train_after_freeze=true")
        dist_ctx = distributed.current()
        if dist_ctx.enabled and self.config.freeze_encoder_after is not None:
            raise ConfigError("freeze_encoder_after is for one process (DistributedDataParallel cannot drop the "
                              "encoder's gradients halfway); run without torchrun or set freeze_encoder_after=null")
        if dist_ctx.enabled and not self._distributed:
            self.generator.distribute()
            self.rng.manual_seed(self.seed + 1_000_003 * dist_ctx.rank)
            self._distributed = True

    def before_training_exp(self, strategy, *args, **kwargs):
        """Note the experience's classes and make its replay set from the other experiences' classes."""
        self._epoch = 0
        self._space_checked = False
        if self.input_space is None:
            self.input_space = infer_input_space(strategy.experience)
            self.labeller.solver_space = self.input_space
            logger.info("replay in the stream's input space %r", self.input_space)
        self._share_input_space()
        current = experience_groups(strategy.experience)
        key = getattr(strategy.experience, "current_experience", None)
        self._experience_groups[tuple(current) if key is None else key] = current
        old = {g for k, gs in self._experience_groups.items() if k != key for g in gs} - set(current)
        self._old_groups = [g for g in self.groups if g in old]  # in order of arrival, as their ids
        self.groups += [g for g in current if g not in self.groups]
        self.replay = self._batches = None
        freeze_after = self.config.freeze_encoder_after
        if freeze_after is not None and self.experiences_seen > freeze_after and not self._encoder_frozen:
            self.generator.freeze_encoder()
            logger.info("experience %d: the encoder is frozen (freeze_encoder_after=%d)", self.experiences_seen,
                        freeze_after)
        if not self._old_groups:
            return
        if self.source.keeps_statistics and not self._encoder_frozen:  # a frozen encoder's codes need no refresh
            self._prev_decoder = self.generator.frozen_decoder()
        # Copied after the previous experience, not here: Avalanche has already grown the model's
        # heads for this experience, and untrained new units would teach the student false scores.
        teacher = None
        if self.labeller.needs_teacher:  # the copy kept after the previous experience, else one now
            teacher = self._teacher if self._teacher is not None else self._frozen_solver(strategy)
        n = self.config.replay_size or min(len(strategy.experience.dataset), MAX_EXPERIENCE_REPLAY)
        self.replay = self.make_replay(n, self._old_groups, teacher)
        self._batches = ReplayBatches(self.replay, self.rng)
        logger.info("experience %d: %d replay examples of %d old classes (source=%s, labels=%s)",
                    self.experiences_seen, len(self.replay), len(self._old_groups), self.source.name,
                    self.labeller.mode)

    def _share_input_space(self) -> None:
        """A solver fed through the ALI (its codes or its round trip) reads images in the plugin's input space.

        Such a solver built without an input space of its own takes the plugin's (given or worked
        out from the stream), so that on a normalising stream its ALI sees [0, 1] images, as it
        does when it trains; one built with another space is an error.
        """
        solver = self._solver
        if not isinstance(solver, ALIFedSolver) or solver.input_space == self.input_space:
            return
        if not solver.input_space.is_identity:
            raise ConfigError(f"the solver reads images in {solver.input_space!r} but the stream's are in "
                              f"{self.input_space!r}; build the solver and ALIReplayPlugin with one input_space "
                              "(or leave the solver's out: it takes the plugin's)")
        solver.input_space = self.input_space
        logger.info("the %s solver reads images in %r", solver.solver_input, self.input_space)

    def before_training_epoch(self, strategy, *args, **kwargs):
        """Count epochs, so that the generator trains only during its first `current_ali_epochs`."""
        self._epoch += 1

    def before_training_iteration(self, strategy, *args, **kwargs):
        """Keep the real mini-batch for the generator and draw this iteration's replay mini-batch."""
        mbatch = strategy.mbatch
        if not self._shape_checked:
            self._check_shape(mbatch[0])
        if not self._space_checked:  # each experience's first mini-batch: a stream whose range changed fails here
            self.input_space.check(mbatch[0], where="this experience's images")
            self._space_checked = True
        self._real = (mbatch[0], mbatch[1])
        self.replay_batch = None
        if self._batches is not None:
            self.replay_batch = self._batches.next(self.config.replay_batch_size or strategy.train_mb_size)

    def before_backward(self, strategy, *args, **kwargs):
        """Weigh the current loss 1/t against the replay mini-batch's loss."""
        if self.replay_batch is None:
            return
        current = strategy.loss
        replay = self.labeller.loss(strategy.model, self.replay_batch)
        t = self.experiences_seen
        strategy.loss = current / t + (1.0 - 1.0 / t) * replay
        self.last_losses = {"current": current.detach(), "replay": replay.detach(), "total": strategy.loss.detach()}

    def after_training_iteration(self, strategy, *args, **kwargs):
        """Wake step: the generator learns the real mini-batch plus (the first examples of) the replay batch."""
        epochs = self.current_ali_epochs
        if (epochs is not None and self._epoch > epochs) or self._generator_idle:
            return
        batch = self.replay_batch
        if batch is not None and self.config.ali_replay_batch_size is not None:
            batch = batch.take(slice(0, self.config.ali_replay_batch_size))
        self._wake_step(*self._real, batch)

    def after_training_exp(self, strategy, *args, **kwargs):
        """The generator's remaining passes (when it has more than the solver), then the sleep refresh."""
        extra = (self.current_ali_epochs or 0) - strategy.train_epochs
        if extra > 0 and not self._generator_idle:
            self._extra_generator_epochs(strategy, extra)
        self.sleep(strategy)
        if self.labeller.needs_teacher:
            self._teacher = self._frozen_solver(strategy)
        self.replay = self._batches = self.replay_batch = self._real = self._prev_decoder = None

    # ------------------------------------------------------------------ wake
    def _wake_step(self, x: torch.Tensor, y: torch.Tensor, batch: Optional[ReplaySet]) -> None:
        """One generator step on the real examples plus replay, weighted 1/t and 1 - 1/t in total.

        With `replay_code_weight` or `replay_image_weight` the replayed examples go with the
        codes they were decoded from (the anchors of `ali_replay.update.ReplayAnchors`).
        """
        if self.config.ali_batch_size is not None:  # the mini-batch's first examples: a cheaper step
            x, y = x[:self.config.ali_batch_size], y[:self.config.ali_batch_size]
        x = self._to_unit(x)
        weight = anchors = None
        if batch is not None and len(batch):
            t = self.experiences_seen
            weight = torch.cat([torch.full((len(x),), (1.0 / t) / len(x)),
                                torch.full((len(batch),), (1.0 - 1.0 / t) / len(batch))]).to(self._device)
            x = torch.cat([x, batch.images])
            y = torch.cat([y.to(batch.classes.dtype), batch.classes])
            if self._anchored:
                anchors = ReplayAnchors(batch.codes, self.config.replay_code_weight, self.config.replay_image_weight)
        if anchors is None:
            self.generator.step(x, y, weight)
        else:  # only an ALIGenerator is given anchors (`_check_latent_settings`)
            self.generator.step(x, y, weight, anchors=anchors)

    def _extra_generator_epochs(self, strategy, epochs: int) -> None:
        """Generator-only passes over the experience (plus replay) after the solver's epochs."""
        dataset = strategy.experience.dataset.train()
        size = strategy.train_mb_size
        seed = self.seed + self.experiences_seen
        dist_ctx = distributed.current()
        sampler = (DistributedSampler(dataset, dist_ctx.world_size, dist_ctx.rank, shuffle=True, seed=seed)
                   if dist_ctx.enabled else None)  # each process its shard, as in the solver's epochs
        loader = DataLoader(dataset, batch_size=size, shuffle=sampler is None, sampler=sampler,
                            collate_fn=getattr(dataset, "collate_fn", None),
                            generator=torch.Generator().manual_seed(seed))
        replay_size = self.config.ali_replay_batch_size or self.config.replay_batch_size or size
        for epoch in range(epochs):
            if sampler is not None:
                sampler.set_epoch(epoch)
            for batch in loader:
                replay = self._batches.next(replay_size) if self._batches is not None else None
                self._wake_step(batch[0].to(self._device), torch.as_tensor(batch[1]).long().to(self._device), replay)

    # ------------------------------------------------------------------ the draw
    @torch.no_grad()
    def make_replay(self, n: int, groups: list[tuple[int, int]], teacher: Optional[torch.nn.Module]) -> ReplaySet:
        """A replay set of n examples of the given (class, task) groups, shuffled, made under no_grad.

        With `filter_replay` (and a teacher) only examples the previous solver assigns to the
        class they were made for are kept, each group's share refilled from fresh draws.
        """
        replay, hard, ids = self._draw(n, groups, teacher)
        self.last_acceptance = None
        if teacher is not None and self.labeller.filter_replay and ids is not None:
            group_ids = [self.groups.index(g) for g in groups]
            quota = torch.bincount(balanced_group_ids(n, group_ids, self.rng), minlength=len(self.groups))
            replay, hard, self.last_acceptance = keep_recognised(
                (replay, hard, ids), lambda: self._draw(n, groups, teacher), quota, group_ids)
        order = torch.randperm(len(replay), generator=self.rng).to(self._device)  # mixed classes
        replay = replay.take(order)
        preview = replay.batch(torch.arange(min(PREVIEW_SIZE, len(replay)), device=self._device))
        if self._generator_idle:  # only codes were drawn: decode the preview's
            preview.images = self.generator.decode(preview.codes, preview.classes)
        self.last_replay = (preview.images.cpu(), hard[order][:PREVIEW_SIZE].cpu())
        return replay

    def _draw(self, n: int, groups: list[tuple[int, int]], teacher: Optional[torch.nn.Module]
              ) -> tuple[ReplaySet, torch.Tensor, Optional[torch.Tensor]]:
        """n freshly decoded examples (with their codes for a solver that reads codes), the teacher's hard
        labels (or the classes) and their group ids.

        The group ids are None where nothing picked a class (unconditioned prior codes: the
        teacher's verdict is the class).
        """
        group_ids = [self.groups.index(g) for g in groups]
        codes, ids = self.source.sample(n, group_ids)
        conditioned = ids is not None or self.generator.conditional
        if ids is None:  # prior codes: pick the task (and the condition of a conditional generator) uniformly
            ids = torch.as_tensor(group_ids)[torch.randint(len(group_ids), (n,), generator=self.rng)]
        classes = torch.as_tensor([c for c, _ in self.groups], dtype=torch.long)[ids]
        tasks = torch.as_tensor([t for _, t in self.groups], dtype=torch.long)[ids]
        if self._generator_idle:  # nothing trains on the images and the solver reads codes: none decoded
            images = torch.empty((n, 0), dtype=torch.uint8, device=self._device)  # indexed like the codes
        else:
            images = batched(lambda z, y: as_uint8_images(self.generator.decode(z, y)), codes, classes)
        reads_codes = self.labeller.reads_codes
        codes = codes.float() if reads_codes or self._anchored else None
        targets, kd_mask, hard, classes = self.labeller.label(teacher, images, classes, tasks, conditioned,
                                                              groups, self.groups, codes if reads_codes else None)
        dev = self._device
        replay = ReplaySet(images, targets.to(dev), classes.to(dev), tasks.to(dev),
                           *(None if t is None else t.to(dev) for t in (kd_mask, codes)))
        return replay, hard.to(dev), ids if conditioned else None

    # ------------------------------------------------------------------ sleep
    def sleep(self, strategy) -> None:
        """Carry the source's statistics into the new latent space and add the experience's codes.

        Under a frozen encoder the old statistics stay as they are: its latent space did not move.
        """
        if not self.source.keeps_statistics:
            return
        images, classes, tasks = experience_tensors(strategy.experience)
        group_of = {g: i for i, g in enumerate(self.groups)}
        ids = torch.as_tensor([group_of[(int(c), int(t))] for c, t in zip(classes, tasks)], dtype=torch.long)
        group_class = torch.as_tensor([c for c, _ in self.groups], dtype=torch.long)
        codes = batched(lambda x, y: self.generator.encode(self._to_unit(x), y), images, classes)
        refresh = None
        if self._prev_decoder is not None:
            def refresh(old_codes, old_ids):
                return refresh_codes(self._prev_decoder, self.generator, old_codes, group_class[old_ids])
        self.source.sleep(codes, ids, refresh)

    # ------------------------------------------------------------------ helpers
    @property
    def _anchored(self) -> bool:
        """Whether the generator's steps on replay pull toward the codes the replay was decoded from."""
        return bool(self.config.replay_code_weight or self.config.replay_image_weight)

    @property
    def _generator_idle(self) -> bool:
        """Whether the generator no longer trains nor decodes replay (`train_after_freeze=False`, frozen encoder)."""
        return not self.config.train_after_freeze and self._encoder_frozen and self.labeller.reads_codes

    @property
    def _encoder_frozen(self) -> bool:
        """Whether the generator's encoder no longer trains (`freeze_encoder_after`)."""
        return bool(getattr(self.generator, "encoder_frozen", False))

    def _check_latent_settings(self, config: ReplayConfig) -> None:
        """Refuse the settings that hold the latent space still where the generator cannot honour them."""
        if (self._anchored or config.freeze_encoder_after is not None) and not (
                isinstance(self.generator, ALIGenerator) and self.generator.has_encoder):
            raise ConfigError("replay_code_weight, replay_image_weight and freeze_encoder_after act on an ALI's "
                              f"encoder, and this generator ({type(self.generator).__name__}) has none; set them "
                              "to 0, 0 and null, or replay with an ALI (ali_replay)")

    def _to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """The stream's images in the generator's [0, 1] (clipped: padding and interpolation overshoot)."""
        space = self.input_space or InputSpace()
        return x if space.is_identity else space.to_unit(x).clamp_(0.0, 1.0)

    def _check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Refuse a solver optimiser that also updates the generator: the plugin trains it with its own."""
        generator_params = {id(p) for p in self.generator.parameters()}
        shared = sum(1 for group in optimizer.param_groups for p in group["params"] if id(p) in generator_params)
        if shared:
            raise ConfigError(f"the strategy's optimizer holds {shared} parameter tensors of the replay generator; "
                              "build it over the solver's parameters only (e.g. Adam(model.parameters())): the "
                              "plugin trains the generator with its own optimizers")

    @staticmethod
    def _frozen_solver(strategy) -> torch.nn.Module:
        """A frozen copy of the solver as it left the previous experience: the teacher."""
        return copy.deepcopy(distributed.unwrap(strategy.model)).eval().requires_grad_(False)

    def _check_shape(self, x: torch.Tensor) -> None:
        """Fail early when the generator's image shape differs from the data's."""
        if tuple(x.shape[1:]) != tuple(self.generator.shape):
            raise ShapeError(f"the generator makes images of shape {tuple(self.generator.shape)} but the stream's "
                             f"images are {tuple(x.shape[1:])}; build the generator for the data's shape")
        self._shape_checked = True
