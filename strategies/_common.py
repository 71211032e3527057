"""Small helpers the strategies share: config coercion, byte counting, experience contents."""
from __future__ import annotations

import json
import re
from typing import Any, Iterable, Mapping, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from ali_replay.config import merge_config
from ali_replay.errors import ConfigError


def check_choice(name: str, value: Any, valid: Iterable[str]) -> str:
    """`value` if it is one of `valid`, else a ConfigError listing them."""
    valid = tuple(valid)
    if value not in valid:
        raise ConfigError(f"unknown {name} {value!r}; valid values: {', '.join(valid)}")
    return value


def _dotlist(mapping: Mapping, prefix: str = "") -> list[str]:
    """A nested mapping as `a.b=value` overrides (values JSON-encoded so YAML reads them back)."""
    items = []
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, (Mapping, DictConfig)):
            items.extend(_dotlist(value, dotted + "."))
        else:
            items.append(f"{dotted}={json.dumps(value)}")
    return items


def as_config(schema: type, value: Any = None, where: Optional[str] = None) -> DictConfig:
    """A validated structured config from None, a dataclass instance, a dict or a DictConfig."""
    if value is None:
        return merge_config(schema)
    if isinstance(value, schema):
        return OmegaConf.structured(value)
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a mapping of {schema.__name__} keys, got {type(value).__name__}")
    try:
        return merge_config(schema, overrides=_dotlist(value))
    except ConfigError as error:
        # merge_config names the dot-list item; the user wrote a mapping, so name that instead.
        where = where or f"the {schema.__name__} mapping"
        raise ConfigError(re.sub(r"in override '[^']*'", f"in {where}", str(error))) from error


def module_nbytes(module: Optional[torch.nn.Module]) -> int:
    """Bytes of all parameters and buffers of a module (0 for None)."""
    if module is None:
        return 0
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


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
