"""GeneratorSchedule: when and on what the generator trains (its passes, the wake step, freezing and idling)."""
from __future__ import annotations

import logging
from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader, DistributedSampler

from ali_replay import distributed
from ali_replay.errors import ConfigError
from ali_replay.update import ReplayAnchors
from strategies.replay.config import ReplayConfig
from strategies.replay.feeds import StreamSpace
from strategies.replay.generators import ReplayGenerator
from strategies.replay.replay_set import ReplaySet

logger = logging.getLogger(__name__)


class GeneratorSchedule:
    """The generator's part of each experience, as `config` says.

    Passes: `first_ali_epochs` in the first experience (real data only), else `ali_epochs`
    (None: one step per solver iteration). Each step (`step`) learns the mini-batch's first
    `ali_batch_size` real examples plus replay, weighted 1/t and 1 - 1/t in total; passes
    beyond the solver's epochs run after them (`extra_passes`). `freeze_encoder_after`
    freezes the encoder once that many experiences are done; with `train_after_freeze=False`
    the generator then idles (no steps, no decoded replay).
    """

    def __init__(self, generator: ReplayGenerator, config: ReplayConfig, space: StreamSpace):
        if (config.replay_code_weight or config.replay_image_weight) and not generator.holds_latent:
            raise ConfigError("replay_code_weight and replay_image_weight anchor an ALI's replay steps, and this "
                              f"generator ({type(generator).__name__}) cannot hold its latent space still; set them "
                              "to 0, or replay with an ALI (ali_replay)")
        if config.freeze_encoder_after is not None and not generator.has_encoder:
            raise ConfigError(f"freeze_encoder_after freezes an encoder, and this generator "
                              f"({type(generator).__name__}) has none; set freeze_encoder_after=null")
        self.generator = generator
        self.config = config
        self.space = space

    @property
    def anchored(self) -> bool:
        """Whether steps on replay pull toward the codes the replay was decoded from (its codes are kept)."""
        return bool(self.config.replay_code_weight or self.config.replay_image_weight)

    @property
    def idle(self) -> bool:
        """Whether the generator no longer trains nor decodes replay (`train_after_freeze=False`, frozen encoder)."""
        return not self.config.train_after_freeze and self.generator.encoder_frozen

    def passes(self, t: int) -> Optional[int]:
        """The generator's passes in experience t (1-based): `first_ali_epochs` in the first, else `ali_epochs`."""
        if t <= 1 and self.config.first_ali_epochs is not None:
            return self.config.first_ali_epochs
        return self.config.ali_epochs

    def begin(self, t: int) -> None:
        """Before experience t: freeze the encoder once `freeze_encoder_after` experiences are done."""
        after = self.config.freeze_encoder_after
        if after is not None and t > after and not self.generator.encoder_frozen:
            self.generator.freeze_encoder()
            logger.info("experience %d: the encoder is frozen (freeze_encoder_after=%d)", t, after)

    def trains(self, epoch: int, t: int) -> bool:
        """Whether the generator steps with the solver in `epoch` (0-based) of experience t."""
        passes = self.passes(t)
        return not self.idle and (passes is None or epoch < passes)

    def extra(self, solver_epochs: int, t: int) -> int:
        """The passes the generator has left after the solver's epochs in experience t."""
        return 0 if self.idle else max(0, (self.passes(t) or 0) - solver_epochs)

    def step(self, x: torch.Tensor, y: torch.Tensor, replay: Optional[ReplaySet], t: int) -> None:
        """One generator step on the real examples plus replay, weighted 1/t and 1 - 1/t in total.

        The replay batch gives its first `ali_replay_batch_size` examples; anchored steps get the
        codes they were decoded from (`ali_replay.update.ReplayAnchors`).
        """
        cfg = self.config
        if cfg.ali_batch_size is not None:  # the mini-batch's first examples: a cheaper step
            x, y = x[:cfg.ali_batch_size], y[:cfg.ali_batch_size]
        x = self.space.to_unit(x)
        weight = anchors = None
        if replay is not None and len(replay):
            weight = torch.cat([torch.full((len(x),), (1.0 / t) / len(x)),
                                torch.full((len(replay),), (1.0 - 1.0 / t) / len(replay))]).to(self.generator.device)
            x = torch.cat([x, replay.images])
            y = torch.cat([y.to(replay.classes.dtype), replay.classes])
            if self.anchored:
                anchors = ReplayAnchors(replay.codes, cfg.replay_code_weight, cfg.replay_image_weight)
        if anchors is None:  # a generator that never holds its latent space need not take the argument
            self.generator.step(x, y, weight)
        else:
            self.generator.step(x, y, weight, anchors=anchors)

    def replay_for_step(self, replay: Optional[ReplaySet]) -> Optional[ReplaySet]:
        """The part of a solver step's replay batch the generator learns (its first `ali_replay_batch_size`)."""
        if replay is not None and self.config.ali_replay_batch_size is not None:
            return replay.take(slice(0, self.config.ali_replay_batch_size))
        return replay

    def extra_passes(self, dataset, batch_size: int, passes: int, seed: int, t: int,
                     next_replay: Optional[Callable[[int], ReplaySet]]) -> None:
        """Generator-only passes over an experience's training data (plus replay) after the solver's epochs.

        Under torchrun each process takes its shard, as in the solver's epochs.
        """
        dist_ctx = distributed.current()
        sampler = (DistributedSampler(dataset, dist_ctx.world_size, dist_ctx.rank, shuffle=True, seed=seed)
                   if dist_ctx.enabled else None)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                            collate_fn=getattr(dataset, "collate_fn", None),
                            generator=torch.Generator().manual_seed(seed))
        replay_size = self.config.ali_replay_batch_size or self.config.replay_batch_size or batch_size
        device = self.generator.device
        for epoch in range(passes):
            if sampler is not None:
                sampler.set_epoch(epoch)
            for batch in loader:
                replay = next_replay(replay_size) if next_replay is not None else None
                self.step(batch[0].to(device), torch.as_tensor(batch[1]).long().to(device), replay, t)
