"""How replay is labelled and judged: stored classes, distillation from the previous solver, or its argmax.

`Labeller.label` gives a freshly decoded batch its targets; `Labeller.loss` is the
solver's loss on a replay batch; `keep_recognised` is the filter that keeps only replay
the previous solver assigns to the class it was made for.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from strategies.replay.classes import Group
from strategies.replay.replay_set import ReplaySet

logger = logging.getLogger(__name__)

FILTER_ROUNDS = 4  # fresh draws the filter may take to fill each class's share
_MASKED = -1e4  # a logit that softmax turns into an exact zero without inf arithmetic


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)) over the classes in `mask`, batch mean.

    Teacher logits narrower than the student's (a classifier that grew since) count
    as zero probability for the missing classes.
    """
    width = student_logits.shape[1]
    if teacher_logits.shape[1] < width:
        pad = teacher_logits.new_full((teacher_logits.shape[0], width - teacher_logits.shape[1]), _MASKED)
        teacher_logits = torch.cat([teacher_logits, pad], 1)
    teacher_logits = teacher_logits[:, :width]
    mask = _fit_width(mask, width)
    log_p = F.log_softmax(teacher_logits.masked_fill(~mask, _MASKED) / temperature, 1)
    log_q = F.log_softmax(student_logits.masked_fill(~mask, _MASKED) / temperature, 1)
    kl = (log_p.exp() * (log_p - log_q)).sum(1)
    return kl.mean() * temperature ** 2


def _fit_width(mask: torch.Tensor, width: int) -> torch.Tensor:
    """A class mask cut or padded (with False) to `width` columns."""
    if mask.shape[1] >= width:
        return mask[:, :width]
    return torch.cat([mask, mask.new_zeros(mask.shape[0], width - mask.shape[1])], 1)


def class_mask(groups: list[Group], tasks: torch.Tensor, width: int) -> torch.Tensor:
    """Per example, the classes of its task among `groups` (N x width bool, on the CPU)."""
    mask = torch.zeros(len(tasks), width, dtype=torch.bool)
    for c, t in groups:
        if c < width:
            mask[tasks.cpu() == t, c] = True
    return mask


class Labeller:
    """Targets for replay: ``stored`` (the class it was made for), ``solver_soft`` (the previous solver's
    logits, distilled at `temperature`) or ``solver_hard`` (its argmax over the old classes).

    It works on class scores alone: the previous solver's scores of a replay set (however the
    solver reads replay, `strategies.replay.feeds`) and the current solver's scores of a mini-batch.
    """

    def __init__(self, mode: str, temperature: float, filter_replay: bool = False):
        self.mode = mode
        self.temperature = float(temperature)
        self.filter_replay = bool(filter_replay)

    @property
    def needs_teacher(self) -> bool:
        """Whether a frozen copy of the previous solver labels or filters the replay."""
        return self.mode != "stored" or self.filter_replay

    def label(self, logits: Optional[torch.Tensor], classes: torch.Tensor, tasks: torch.Tensor, conditioned: bool,
              old_groups: list[Group], seen_groups: list[Group]
              ) -> tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor, torch.Tensor]:
        """(targets, distillation mask or None, the teacher's hard labels, classes) of a decoded batch.

        `logits` are the previous solver's scores of the batch (None: no teacher, the classes are
        the labels). Replay that was made for no class (unconditioned prior codes) takes the
        teacher's verdict as its class.
        """
        if logits is None:
            return classes, None, classes, classes
        targets, kd_mask, hard = self._teacher_targets(logits, tasks, old_groups, seen_groups)
        if not conditioned:
            classes = hard
        if self.mode == "stored":
            targets, kd_mask = classes, None  # the teacher only judged (filter_replay)
        return targets, kd_mask, hard, classes

    def _teacher_targets(self, logits: torch.Tensor, tasks: torch.Tensor, old_groups: list[Group],
                         seen_groups: list[Group]) -> tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """The previous solver's (hard labels or logits, distillation mask, hard labels).

        Hard labels are the argmax over the old classes of the example's task: the previous
        solver never learnt the current ones.
        """
        old_mask = class_mask(old_groups, tasks, logits.shape[1]).to(logits.device)
        hard = logits.masked_fill(~old_mask, float("-inf")).argmax(1)
        if self.mode == "solver_hard":
            return hard, None, hard
        # Distil over every class seen so far: the teacher's (near-zero) scores for the
        # current classes tell the student that replayed examples are not of those classes.
        width = max(logits.shape[1], max(c for c, _ in seen_groups) + 1)
        return logits, class_mask(seen_groups, tasks, width), hard

    def loss(self, output: torch.Tensor, batch: ReplaySet) -> torch.Tensor:
        """The solver's loss on a replay batch, given its scores `output`: distillation from teacher logits,
        else cross-entropy."""
        if batch.soft:
            return distillation_loss(output, batch.targets, batch.kd_mask, self.temperature)
        return F.cross_entropy(output, batch.targets)


Draw = tuple[ReplaySet, torch.Tensor, torch.Tensor]  # replay, the teacher's hard labels, group ids


def keep_recognised(first: Draw, redraw: Callable[[], Draw], quota: torch.Tensor, group_ids: list[int]
                    ) -> tuple[ReplaySet, torch.Tensor, float]:
    """The examples whose teacher label is their class, `quota[g]` of each group g; also the first draw's
    share recognised.

    Up to `FILTER_ROUNDS` draws (`first`, then `redraw()`) fill each group's share; a share
    still short after them is topped up with that group's rejected examples, so the set keeps its size.
    """
    kept: dict[int, list[torch.Tensor]] = {g: [] for g in group_ids}  # accepted rows per group, per round
    spare: dict[int, list[torch.Tensor]] = {g: [] for g in group_ids}  # rejected rows, for a top-up
    draws, have = [], torch.zeros_like(quota)
    for round_ in range(FILTER_ROUNDS):
        replay, hard, ids = first if round_ == 0 else redraw()
        ok = (hard == replay.classes).cpu()
        draws.append((replay, hard, ok))
        for g in group_ids:
            rows = torch.nonzero(ok & (ids == g)).flatten()[: int(quota[g] - have[g])]
            have[g] += len(rows)
            kept[g].append(rows)
            spare[g].append(torch.nonzero(~ok & (ids == g)).flatten()[: int(quota[g])])
        if bool((have >= quota).all()):
            break
    parts = []
    for i, (replay, hard, _) in enumerate(draws):
        for g in group_ids:
            rows = kept[g][i]
            if have[g] < quota[g]:  # FILTER_ROUNDS draws were not enough: fill up with rejected ones
                extra = spare[g][i][: int(quota[g] - have[g])]
                have[g] += len(extra)
                rows = torch.cat([rows, extra])
            rows = rows.to(replay.images.device)
            parts.append((replay.take(rows), hard[rows]))
    acceptance = float(draws[0][2].float().mean())
    logger.info("replay filter: the previous solver recognised %.1f%% of the first draw; %d draw(s)",
                100 * acceptance, len(draws))
    return ReplaySet.cat([p for p, _ in parts]), torch.cat([h for _, h in parts]), acceptance
