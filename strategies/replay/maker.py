"""ReplayMaker: an experience's replay set, made once before it starts: draw, decode, label, filter, shuffle."""
from __future__ import annotations

from typing import Optional

import torch

from ali_replay.evaluation import batched
from strategies._common import PREVIEW_SIZE
from strategies.replay.classes import ClassBook, Group
from strategies.replay.feeds import CodeFeed, ImageFeed
from strategies.replay.generators import ReplayGenerator
from strategies.replay.labelling import Labeller, keep_recognised
from strategies.replay.replay_set import ReplaySet, as_uint8_images
from strategies.replay.sources import ReplaySource, balanced_group_ids


class ReplayMaker:
    """Turns the source's codes into a labelled replay set of the old classes, and keeps a preview of it.

    With the labeller's `filter_replay` (and a teacher) only examples the previous solver assigns
    to the class they were made for are kept, each group's share refilled from fresh draws
    (`keep_recognised`); `last_acceptance` is the share of the first draw it recognised.
    `last_replay` holds the first images of the latest set and their labels (CPU), for pictures.
    """

    def __init__(self, generator: ReplayGenerator, source: ReplaySource, labeller: Labeller, book: ClassBook,
                 rng: torch.Generator):
        self.generator = generator
        self.source = source
        self.labeller = labeller
        self.book = book
        self.rng = rng  # the plugin's generator: every draw follows its seed
        self.last_replay: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self.last_acceptance: Optional[float] = None
        self.last_acceptance_by_class: dict[int, float] = {}  # the same share, class by class

    @torch.no_grad()
    def make(self, n: int, groups: list[Group], teacher: Optional[torch.nn.Module], feed: ImageFeed | CodeFeed, *,
             decode: bool = True, keep_codes: bool = False) -> ReplaySet:
        """A replay set of n examples of `groups`, shuffled, labelled by `teacher` (None: the classes).

        `decode=False` decodes nothing but the preview (a solver that reads codes, a generator
        that no longer trains); `keep_codes` keeps the codes beside the images (the solver or the
        generator's anchored steps read them).
        """
        device = self.generator.device

        def draw() -> tuple[ReplaySet, torch.Tensor, Optional[torch.Tensor]]:
            return self._draw(n, groups, teacher, feed, decode, keep_codes or feed.reads_codes, device)

        replay, hard, ids = draw()
        self.last_acceptance, self.last_acceptance_by_class = None, {}
        if teacher is not None and self.labeller.filter_replay and ids is not None:
            recognised = (hard == replay.classes).cpu()
            self.last_acceptance_by_class = {int(c): float(recognised[replay.classes.cpu() == c].float().mean())
                                             for c in torch.unique(replay.classes.cpu())}
            group_ids = self.book.ids(groups)
            quota = torch.bincount(balanced_group_ids(n, group_ids, self.rng), minlength=len(self.book.groups))
            replay, hard, self.last_acceptance = keep_recognised((replay, hard, ids), draw, quota, group_ids)
        order = torch.randperm(len(replay), generator=self.rng).to(device)  # mixed classes
        replay = replay.take(order)
        preview = replay.batch(torch.arange(min(PREVIEW_SIZE, len(replay)), device=device))
        if not decode:  # only codes were drawn: decode the preview's
            preview.images = self.generator.decode(preview.codes, preview.classes)
        self.last_replay = (preview.images.cpu(), hard[order][:PREVIEW_SIZE].cpu())
        return replay

    def _draw(self, n: int, groups: list[Group], teacher: Optional[torch.nn.Module], feed: ImageFeed | CodeFeed,
              decode: bool, keep_codes: bool, device: torch.device
              ) -> tuple[ReplaySet, torch.Tensor, Optional[torch.Tensor]]:
        """n freshly decoded examples, the teacher's hard labels (or the classes) and their group ids.

        The group ids are None where nothing picked a class (unconditioned prior codes: the
        teacher's verdict is the class).
        """
        group_ids = self.book.ids(groups)
        codes, ids = self.source.sample(n, group_ids)
        conditioned = ids is not None or self.generator.conditional
        if ids is None:  # prior codes: pick the task (and the condition of a conditional generator) uniformly
            ids = torch.as_tensor(group_ids)[torch.randint(len(group_ids), (n,), generator=self.rng)]
        classes, tasks = self.book.classes(ids), self.book.tasks(ids)
        if decode:
            images = batched(lambda z, y: as_uint8_images(self.generator.decode(z, y)), codes, classes)
        else:  # nothing trains on the images and the solver reads codes: none decoded
            images = torch.empty((n, 0), dtype=torch.uint8, device=device)  # indexed like the codes
        codes = codes.float() if keep_codes else None
        logits = None
        if teacher is not None:
            seen = codes if feed.reads_codes else images
            logits = batched(lambda x, t: feed.logits(teacher, x.to(device), t.to(device)), seen, tasks).float()
        targets, kd_mask, hard, classes = self.labeller.label(logits, classes, tasks, conditioned, groups,
                                                              self.book.groups)
        replay = ReplaySet(images, targets.to(device), classes.to(device), tasks.to(device),
                           *(None if t is None else t.to(device) for t in (kd_mask, codes)))
        return replay, hard.to(device), ids if conditioned else None
