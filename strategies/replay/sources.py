"""Where replay codes come from: the prior, a Gaussian per class, stored codes, or a class-conditional decoder.

Each source draws `sample(n, group_ids)` codes (a group is one (class, task) pair the
plugin has seen; a group id is its index in the plugin's list; `rng` another generator than the
source's own, for draws that must not depend on the process), carries its statistics
into the new latent space in `sleep`, and counts the bytes it keeps in `nbytes`.
`make_source` chooses one, once, from the config and the generator.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ali_replay.errors import ConfigError
from ali_replay.evaluation import batched
from ali_replay.latent_memory import LatentMemory
from strategies.replay.config import ReplayConfig
from strategies.replay.generators import ReplayGenerator

REFRESH_SAMPLES = 1000  # draws per old class when refitting its Gaussian in the sleep phase

# (codes, group ids) -> the same codes carried into the new latent space; None before there is an old one
Refresh = Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


def balanced_group_ids(n: int, group_ids: list[int], rng: torch.Generator) -> torch.Tensor:
    """n group ids, an equal count for each group (the remainder to random ones)."""
    counts = torch.full((len(group_ids),), n // len(group_ids), dtype=torch.long)
    counts[torch.randperm(len(group_ids), generator=rng)[: n - int(counts.sum())]] += 1
    return torch.repeat_interleave(torch.as_tensor(group_ids, dtype=torch.long), counts)


def refresh_codes(old_decode: Callable, generator: ReplayGenerator, codes: torch.Tensor,
                  classes: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Codes of the old latent space mapped into the new one: the new encoder's code of the old decoder's image.

    The old decoder turns each code into the image it stood for; the current encoder
    gives that image's code in the current latent space (posterior means, float32, CPU).
    """
    if len(codes) == 0:
        return torch.empty(0, generator.latent_dim)
    return batched(lambda z, y: generator.encode(old_decode(z, y), y), codes.float(), classes)


class ReplaySource:
    """Codes to decode into replay, and the statistics behind them."""

    name = ""
    needs_encoder = False
    keeps_statistics = False  # whether `sleep` carries anything into the new latent space
    memory_kind = "statistics"  # what its bytes are (strategies.memory.KeptBytes): statistics of the classes

    def __init__(self, latent_dim: int, rng: torch.Generator, scale: float = 1.0):
        self.latent_dim = latent_dim
        self.rng = rng  # the plugin's generator: every draw follows its seed
        self.scale = float(scale)

    def sample(self, n: int, group_ids: list[int], rng: Optional[torch.Generator] = None
               ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """n codes and the group id each stands for (None: the source picks no class), drawn with `rng`
        (None: the source's own generator)."""
        raise NotImplementedError

    def _rng(self, rng: Optional[torch.Generator]) -> torch.Generator:
        """`rng`, else the source's own generator."""
        return rng if rng is not None else self.rng

    def sleep(self, codes: torch.Tensor, group_ids: torch.Tensor, refresh: Refresh) -> None:
        """Carry old statistics into the new latent space (`refresh`) and add the new codes of `group_ids`."""

    @property
    def nbytes(self) -> int:
        """Bytes the source keeps between experiences."""
        return 0


class PriorSource(ReplaySource):
    """Codes from N(0, scale^2 I) for no class in particular: the previous solver says what they show."""

    name = "prior"

    def sample(self, n: int, group_ids: list[int], rng: Optional[torch.Generator] = None
               ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """n prior codes, no group ids."""
        return self.scale * torch.randn(n, self.latent_dim, generator=self._rng(rng)), None


class ConditionalSource(PriorSource):
    """Prior codes with an equal share of the old groups each: a class-conditional decoder renders their class."""

    name = "conditional"

    def sample(self, n: int, group_ids: list[int], rng: Optional[torch.Generator] = None
               ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """n prior codes, then their class-balanced group ids."""
        codes, _ = super().sample(n, group_ids, rng)
        return codes, balanced_group_ids(n, group_ids, self._rng(rng))


class ClassGaussianSource(ReplaySource):
    """A Gaussian per group over the encoder's codes (`full` covariance or `diag`), refitted after each sleep."""

    name = "class_latent"
    needs_encoder = True
    keeps_statistics = True

    def __init__(self, latent_dim: int, rng: torch.Generator, scale: float = 1.0, covariance: str = "full"):
        super().__init__(latent_dim, rng, scale)
        self.covariance = covariance
        self.gaussians: dict[int, dict[str, torch.Tensor]] = {}  # group id -> mean and var (diag) or cov (full)

    def sample(self, n: int, group_ids: list[int], rng: Optional[torch.Generator] = None
               ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Class-balanced group ids, then each group's draws from its Gaussian."""
        rng = self._rng(rng)
        ids = balanced_group_ids(n, group_ids, rng)
        codes = torch.empty(n, self.latent_dim)
        for g in group_ids:
            rows = torch.nonzero(ids == g).flatten()
            codes[rows] = self._draw(self.gaussians[g], len(rows), self.scale, rng)
        return codes, ids

    def sleep(self, codes: torch.Tensor, group_ids: torch.Tensor, refresh: Refresh) -> None:
        """Refit the Gaussians: old ones on their draws carried into the new space, plus the new codes.

        Without `refresh` (no old latent space to carry them from, or one that did not move: a
        frozen encoder) the old Gaussians stay as they are, and a group the experience
        brought codes of is fitted on those.
        """
        new_groups = torch.unique(group_ids).tolist()
        kept = {} if refresh is not None else {g: s for g, s in self.gaussians.items() if g not in new_groups}
        refreshed: dict[int, torch.Tensor] = {}
        if refresh is not None:
            for g, stats in self.gaussians.items():
                z_old = self._draw(stats, max(REFRESH_SAMPLES, 4 * self.latent_dim))
                refreshed[g] = refresh(z_old, torch.full((len(z_old),), g, dtype=torch.long))
        for g in new_groups:
            new = codes[group_ids == g]
            refreshed[g] = torch.cat([refreshed[g], new]) if g in refreshed else new
        self.gaussians = dict(sorted({**kept, **{g: self._fit(z) for g, z in refreshed.items()}}.items()))

    @property
    def nbytes(self) -> int:
        """Bytes of the means and (co)variances."""
        return sum(t.numel() * t.element_size() for stats in self.gaussians.values() for t in stats.values())

    def _fit(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean and variance (or covariance) of codes, with a small floor for stability."""
        mean = codes.mean(0)
        if self.covariance == "full":
            if len(codes) < 2:
                return {"mean": mean, "cov": 1e-3 * torch.eye(len(mean))}
            return {"mean": mean, "cov": torch.cov(codes.T) + 1e-4 * torch.eye(len(mean))}
        var = codes.var(0, unbiased=len(codes) > 1) if len(codes) > 1 else torch.full_like(mean, 1e-3)
        return {"mean": mean, "var": var.clamp_min(1e-6)}

    def _draw(self, stats: dict[str, torch.Tensor], n: int, scale: float = 1.0,
              rng: Optional[torch.Generator] = None) -> torch.Tensor:
        """n draws from one Gaussian, spread scaled by `scale`."""
        eps = scale * torch.randn(n, stats["mean"].shape[0], generator=self._rng(rng))
        if "cov" in stats:
            return stats["mean"] + eps @ torch.linalg.cholesky(stats["cov"]).T
        return stats["mean"] + eps * stats["var"].sqrt()


class LatentMemorySource(ReplaySource):
    """Stored encoder codes of real examples (float16, in a byte budget), class-balanced draws."""

    name = "latent_memory"
    needs_encoder = True
    keeps_statistics = True
    memory_kind = "stored_examples"  # codes of real examples stand for them

    def __init__(self, latent_dim: int, rng: torch.Generator, budget_bytes: int, seed: int = 0):
        super().__init__(latent_dim, rng)
        self.memory = LatentMemory(latent_dim, budget_bytes, seed)  # labels are group ids

    def sample(self, n: int, group_ids: list[int], rng: Optional[torch.Generator] = None
               ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """n stored codes of the given groups, class-balanced, and their group ids."""
        rng = self._rng(rng)
        if self.memory.classes == sorted(group_ids):
            return self.memory.sample(n, rng)
        # The memory also holds groups not asked for (an experience trained again): draw from the others only.
        keep = torch.isin(self.memory.labels.long(), torch.as_tensor(group_ids, dtype=torch.long))
        subset = LatentMemory(self.latent_dim, self.memory.budget_bytes)
        subset.add(self.memory.codes[keep], self.memory.labels[keep])
        return subset.sample(n, rng)

    def sleep(self, codes: torch.Tensor, group_ids: torch.Tensor, refresh: Refresh) -> None:
        """Carry the stored codes into the new latent space, then store the new ones (within the budget)."""
        if len(self.memory) and refresh is not None:
            self.memory.replace_codes(refresh(self.memory.codes.float(), self.memory.labels.long()))
        self.memory.add(codes, group_ids)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored codes and their labels."""
        return self.memory.nbytes


def default_source(generator: ReplayGenerator) -> str:
    """The best measured source for this kind of generator (BENCHMARKS.md,
    "Figures behind the replay defaults")."""
    if generator.conditional:
        return "conditional"
    return "class_latent" if generator.has_encoder else "prior"


def make_source(config: ReplayConfig, generator: ReplayGenerator, rng: torch.Generator, seed: int = 0
                ) -> ReplaySource:
    """The replay source `config.source` names (None: `default_source`), checked against the generator."""
    name = config.source or default_source(generator)
    if name == "conditional" and not generator.conditional:
        raise ConfigError("source=conditional needs a class-conditional generator (model.conditional=true); "
                          "valid sources for this one: prior, class_latent, latent_memory")
    if name in ("class_latent", "latent_memory") and not generator.has_encoder:
        raise ConfigError(f"source={name} needs an encoder, and this generator is encoder-free; "
                          "use source=prior or source=conditional")
    dim = generator.latent_dim
    if name == "class_latent":
        return ClassGaussianSource(dim, rng, config.latent_scale, config.covariance)
    if name == "latent_memory":
        return LatentMemorySource(dim, rng, config.memory_bytes, seed)
    if name == "conditional":
        return ConditionalSource(dim, rng, config.latent_scale)
    return PriorSource(dim, rng, config.latent_scale)
