"""The classes a replay method has met: (class, task) groups in order of arrival, and the experience of each."""
from __future__ import annotations

from typing import Any

import torch

from strategies._common import experience_groups

Group = tuple[int, int]  # (class, task)


class ClassBook:
    """The (class, task) groups seen, in order of arrival (a group's id is its index), and each experience's groups.

    An experience is known by its id (`current_experience`), so that training one again
    replaces what it brought instead of counting it twice.
    """

    def __init__(self):
        self.groups: list[Group] = []
        self._by_experience: dict[Any, list[Group]] = {}

    @property
    def experiences_seen(self) -> int:
        """Distinct experiences met so far, the current one included: the t of the 1/t weighting."""
        return len(self._by_experience)

    def begin(self, experience) -> list[Group]:
        """Note an experience's groups; return the old groups to replay (those only other experiences brought).

        The old groups come in order of arrival, as their ids.
        """
        current = experience_groups(experience)
        key = getattr(experience, "current_experience", None)
        self._by_experience[tuple(current) if key is None else key] = current
        old = {g for k, gs in self._by_experience.items() if k != key for g in gs} - set(current)
        self.groups += [g for g in current if g not in self.groups]
        return [g for g in self.groups if g in old]

    def ids(self, groups: list[Group]) -> list[int]:
        """The ids of `groups`."""
        return [self.groups.index(g) for g in groups]

    def ids_of(self, classes: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """The group id of each (class, task) pair of two label tensors."""
        group_of = {g: i for i, g in enumerate(self.groups)}
        return torch.as_tensor([group_of[(int(c), int(t))] for c, t in zip(classes, tasks)], dtype=torch.long)

    def classes(self, ids: torch.Tensor) -> torch.Tensor:
        """The class of each group id."""
        return torch.as_tensor([c for c, _ in self.groups], dtype=torch.long)[ids]

    def tasks(self, ids: torch.Tensor) -> torch.Tensor:
        """The task of each group id."""
        return torch.as_tensor([t for _, t in self.groups], dtype=torch.long)[ids]
