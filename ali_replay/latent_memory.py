"""A class-balanced store of latent codes under a fixed byte budget (codes as float16)."""
from __future__ import annotations

import logging
from typing import Optional

import torch

logger = logging.getLogger(__name__)

CODE_DTYPE = torch.float16
LABEL_DTYPE = torch.int16  # class ids (or group ids) stay far below 32768


class LatentMemory:
    """Encoder codes with their labels, kept class-balanced within `budget_bytes`.

    Each entry costs `latent_dim * 2` bytes of float16 code plus 2 bytes of int16
    label. When new classes arrive every class gets an equal share of the entries
    that fit (a class holding fewer than its share lends the rest to the others),
    and the surplus of each class is dropped at random with a seeded generator.
    """

    def __init__(self, latent_dim: int, budget_bytes: int, seed: int = 0):
        if latent_dim <= 0:
            raise ValueError(f"latent_dim must be positive, got {latent_dim}")
        if budget_bytes < 0:
            raise ValueError(f"budget_bytes must be >= 0, got {budget_bytes}")
        self.latent_dim = int(latent_dim)
        self.budget_bytes = int(budget_bytes)
        self._codes = torch.empty(0, self.latent_dim, dtype=CODE_DTYPE)
        self._labels = torch.empty(0, dtype=LABEL_DTYPE)
        self._generator = torch.Generator().manual_seed(seed)

    # ------------------------------------------------------------------ sizes
    @property
    def entry_bytes(self) -> int:
        """Bytes one stored code and its label take."""
        return self.latent_dim * torch.finfo(CODE_DTYPE).bits // 8 + torch.iinfo(LABEL_DTYPE).bits // 8

    @property
    def capacity(self) -> int:
        """How many entries fit in the byte budget."""
        return self.budget_bytes // self.entry_bytes

    @property
    def nbytes(self) -> int:
        """Bytes actually held by the stored codes and labels."""
        return (self._codes.numel() * self._codes.element_size()
                + self._labels.numel() * self._labels.element_size())

    def __len__(self) -> int:
        return int(self._labels.numel())

    @property
    def codes(self) -> torch.Tensor:
        """The stored codes (float16, N x latent_dim)."""
        return self._codes

    @property
    def labels(self) -> torch.Tensor:
        """The stored labels (int16, N)."""
        return self._labels

    @property
    def classes(self) -> list[int]:
        """The labels present, sorted."""
        return [int(c) for c in torch.unique(self._labels)]

    def counts(self) -> dict[int, int]:
        """Entries held per class."""
        values, counts = torch.unique(self._labels, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}

    # ------------------------------------------------------------------ updates
    def add(self, codes: torch.Tensor, labels: torch.Tensor) -> None:
        """Add codes with their labels, then rebalance the classes within the budget."""
        codes = torch.as_tensor(codes).detach()
        labels = torch.as_tensor(labels).detach().reshape(-1)
        if codes.ndim != 2 or codes.shape[1] != self.latent_dim:
            raise ValueError(f"codes must be N x {self.latent_dim}, got {tuple(codes.shape)}")
        if codes.shape[0] != labels.shape[0]:
            raise ValueError(f"{codes.shape[0]} codes but {labels.shape[0]} labels")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > torch.iinfo(LABEL_DTYPE).max):
            raise ValueError("labels must lie in 0..32767")
        self._codes = torch.cat([self._codes, codes.to("cpu", CODE_DTYPE)])
        self._labels = torch.cat([self._labels, labels.to("cpu", LABEL_DTYPE)])
        self._rebalance()

    def replace_codes(self, new_codes: torch.Tensor) -> None:
        """Swap every stored code for a new one (same order), e.g. after re-encoding."""
        new_codes = torch.as_tensor(new_codes).detach()
        if tuple(new_codes.shape) != tuple(self._codes.shape):
            raise ValueError(f"expected codes of shape {tuple(self._codes.shape)}, got {tuple(new_codes.shape)}")
        self._codes = new_codes.to("cpu", CODE_DTYPE).clone()

    def _quotas(self, counts: dict[int, int]) -> dict[int, int]:
        """Equal shares of the capacity; a class short of its share leaves the rest to others."""
        remaining = self.capacity
        quotas: dict[int, int] = {}
        open_classes = sorted(counts)
        while open_classes:
            share = remaining // len(open_classes)
            small = [c for c in open_classes if counts[c] <= share]
            if not small:
                extra = remaining - share * len(open_classes)
                for i, c in enumerate(open_classes):
                    quotas[c] = share + (1 if i < extra else 0)
                break
            for c in small:
                quotas[c] = counts[c]
                remaining -= counts[c]
            open_classes = [c for c in open_classes if c not in quotas]
        return quotas

    def _rebalance(self) -> None:
        """Drop random surplus entries of the classes above their quota."""
        counts = self.counts()
        if sum(counts.values()) <= self.capacity:
            return
        quotas = self._quotas(counts)
        if self.capacity < len(counts):
            logger.warning("latent memory of %d bytes holds %d codes for %d classes: some classes get none",
                           self.budget_bytes, self.capacity, len(counts))
        keep = []
        for c, quota in quotas.items():
            idx = torch.nonzero(self._labels == c).flatten()
            if len(idx) > quota:
                idx = idx[torch.randperm(len(idx), generator=self._generator)[:quota]]
            keep.append(idx)
        kept = torch.sort(torch.cat(keep)).values  # keep the insertion order
        self._codes = self._codes[kept]
        self._labels = self._labels[kept]

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n class-balanced draws: (codes float32, labels int64).

        The n draws are split evenly over the classes (the remainder to random
        classes); within a class, entries are drawn without replacement until all
        were used, then again.
        """
        if len(self) == 0:
            raise ValueError("cannot sample from an empty latent memory")
        generator = generator if generator is not None else self._generator
        classes = self.classes
        per_class = torch.full((len(classes),), n // len(classes), dtype=torch.long)
        extra = n - int(per_class.sum())
        if extra:
            per_class[torch.randperm(len(classes), generator=generator)[:extra]] += 1
        picks = []
        for c, k in zip(classes, per_class.tolist()):
            idx = torch.nonzero(self._labels == c).flatten()
            rounds = -(-k // len(idx))  # ceil: how many shuffled passes over the class
            order = torch.cat([torch.randperm(len(idx), generator=generator) for _ in range(rounds)])
            picks.append(idx[order[:k]])
        chosen = torch.cat(picks)
        return self._codes[chosen].to(torch.float32), self._labels[chosen].to(torch.int64)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to restore the memory."""
        return {"latent_dim": self.latent_dim, "budget_bytes": self.budget_bytes,
                "codes": self._codes.clone(), "labels": self._labels.clone(),
                "generator": self._generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from `state_dict`."""
        if int(state["latent_dim"]) != self.latent_dim:
            raise ValueError(f"state has latent_dim {state['latent_dim']}, this memory {self.latent_dim}")
        self.budget_bytes = int(state["budget_bytes"])
        self._codes = state["codes"].to("cpu", CODE_DTYPE).clone()
        self._labels = state["labels"].to("cpu", LABEL_DTYPE).clone()
        if "generator" in state:
            self._generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return (f"LatentMemory(latent_dim={self.latent_dim}, entries={len(self)}/{self.capacity}, "
                f"nbytes={self.nbytes}, classes={self.classes})")
