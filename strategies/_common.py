"""Small helpers the strategies share: choices, experience contents, a silent evaluator."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from avalanche.training.plugins import EvaluationPlugin
from torch.utils.data import DataLoader

from ali_replay.errors import ConfigError

PREVIEW_SIZE = 64  # replayed examples a strategy keeps of each experience, for pictures


def check_choice(name: str, value: Any, valid: Iterable[str]) -> str:
    """`value` if it is one of `valid`, else a ConfigError listing them."""
    valid = tuple(valid)
    if value not in valid:
        raise ConfigError(f"unknown {name} {value!r}; valid values: {', '.join(valid)}")
    return value


def silent_evaluator() -> EvaluationPlugin:
    """An evaluator without metrics or loggers, for a generator's own strategy."""
    return EvaluationPlugin(loggers=[])


def experience_groups(experience) -> list[tuple[int, int]]:
    """The (class, task) pairs an experience's data holds, in sorted order."""
    dataset = experience.dataset
    targets = getattr(dataset, "targets", None)
    tasks = getattr(dataset, "targets_task_labels", None)
    if targets is None:
        # A plain dataset without Avalanche attributes: read the labels from the examples.
        pairs = {(int(item[1]), int(item[2]) if len(item) > 2 else 0) for item in dataset}
        return sorted(pairs)
    targets = torch.as_tensor(list(targets), dtype=torch.long)
    tasks = torch.as_tensor(list(tasks), dtype=torch.long) if tasks is not None else torch.zeros_like(targets)
    pairs = torch.unique(torch.stack([targets, tasks], 1), dim=0)
    return [(int(c), int(t)) for c, t in pairs.tolist()]


@torch.no_grad()
def experience_tensors(experience, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All images (eval transforms), labels and task labels of an experience."""
    dataset = experience.dataset.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=getattr(dataset, "collate_fn", None))
    xs, ys, ts = [], [], []
    for batch in loader:
        xs.append(batch[0])
        ys.append(torch.as_tensor(batch[1]).long())
        ts.append(torch.as_tensor(batch[-1]).long() if len(batch) >= 3 else torch.zeros_like(ys[-1]))
    return torch.cat(xs), torch.cat(ys), torch.cat(ts)
