"""Generative replay with an ALI: wake (replay while learning) and sleep (refresh latent statistics)."""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.models.utils import avalanche_forward
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, DistributedSampler

from ali_replay.ali import ALI
from ali_replay import distributed
from ali_replay.config import OptimConfig
from ali_replay.errors import ConfigError, ShapeError
from ali_replay.latent_memory import LatentMemory
from ali_replay.runtime import evaluating
from ali_replay.training import Players, check_optim, make_optimizers, train_step
from strategies._common import as_config, check_choice, experience_groups, module_nbytes

logger = logging.getLogger(__name__)

SOURCES = ("prior", "class_latent", "latent_memory", "conditional")
LABEL_MODES = ("stored", "solver_soft", "solver_hard")
WEIGHTINGS = ("inverse_t", "concat")
COVARIANCES = ("diag", "full")

DEFAULT_REPLAY_SIZE = 60000  # replay examples made per experience (split MNIST: 0.942 vs 0.560 with 10,000)
MAX_EXPERIENCE_REPLAY = 10000  # replay_size=None: as many as the experience's real examples, at most this many
GENERATION_BATCH = 512  # examples decoded / labelled per no-grad batch
REFRESH_SAMPLES = 1000  # draws per old class when refitting its Gaussian in the sleep phase
PREVIEW_SIZE = 64
FILTER_ROUNDS = 4  # fresh draws filter_replay may take to fill each class's share
_MASKED = -1e4  # a logit that softmax turns into an exact zero without inf arithmetic


@dataclass
class ReplaySet:
    """Generated examples of one experience, made once before it starts (no autograd history)."""

    images: torch.Tensor  # N x C x H x W, uint8 (0..255, as the data sets store images; `batch` gives floats)
    targets: torch.Tensor  # N int64 hard labels, or N x K teacher logits (solver_soft)
    classes: torch.Tensor  # N int64 class each example stands for (the ALI's condition)
    tasks: torch.Tensor  # N int64 task label of each example
    kd_mask: Optional[torch.Tensor] = None  # N x K bool: classes the distillation runs over

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def take(self, idx: torch.Tensor | slice) -> "ReplaySet":
        """The examples at `idx`, stored as they are."""
        return ReplaySet(self.images[idx], self.targets[idx], self.classes[idx], self.tasks[idx],
                         None if self.kd_mask is None else self.kd_mask[idx])

    def batch(self, idx: torch.Tensor) -> "ReplaySet":
        """The examples at `idx` with float images in [0, 1]: a mini-batch to train on."""
        out = self.take(idx)
        out.images = as_float_images(out.images)
        return out

    @staticmethod
    def cat(sets: list["ReplaySet"]) -> "ReplaySet":
        """The examples of several sets, one after the other."""
        masks = [s.kd_mask for s in sets]
        return ReplaySet(torch.cat([s.images for s in sets]), torch.cat([s.targets for s in sets]),
                         torch.cat([s.classes for s in sets]), torch.cat([s.tasks for s in sets]),
                         None if masks[0] is None else torch.cat(masks))

    @property
    def soft(self) -> bool:
        """Whether the targets are teacher logits."""
        return self.targets.ndim == 2


def as_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) as floats in [0, 1]; float images unchanged."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images


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


def refresh_codes(old_decoder: torch.nn.Module, ali: ALI, codes: torch.Tensor,
                  classes: Optional[torch.Tensor] = None, device=None) -> torch.Tensor:
    """Codes of the old latent space mapped into the new one: new_encoder(old_decoder(z)), posterior means.

    The old decoder turns each code into the image it stood for; the current encoder
    gives that image's code in the current latent space. Runs in eval mode, in
    batches, without autograd history; returns float32 codes on the CPU.
    """
    device = device if device is not None else ali.device
    cond = ali.conditional
    out = []
    with evaluating(old_decoder, ali):
        for start in range(0, len(codes), GENERATION_BATCH):
            z = codes[start:start + GENERATION_BATCH].to(device, torch.float32)
            y = classes[start:start + GENERATION_BATCH].to(device) if cond else None
            out.append(ali.encode(old_decoder(z, y), y).float().cpu())
    return torch.cat(out) if out else torch.empty(0, ali.latent_dim)


def _fit_width(mask: torch.Tensor, width: int) -> torch.Tensor:
    """A class mask cut or padded (with False) to `width` columns."""
    if mask.shape[1] >= width:
        return mask[:, :width]
    return torch.cat([mask, mask.new_zeros(mask.shape[0], width - mask.shape[1])], 1)


# The ALI's optimiser defaults for replay: within one experience a small ALI must learn new classes
# while replaying old ones, which needs a faster rate and a strong reconstruction term than the
# standalone trainer's defaults (measured on split digits: lr 2e-4 or cycle_x 1 roughly halve accuracy).
REPLAY_OPTIM = {"lr_d": 1e-3, "lr_g": 1e-3, "cycle_x": 10.0, "cycle_z": 1.0}


class ALIReplayPlugin(SupervisedPlugin, supports_distributed=True):
    """Generative replay from an ALI for any SupervisedTemplate (wake: replay; sleep: refresh).

    Wake (every experience after the first): a replay set is generated once, before
    the experience, under no_grad; each iteration draws a replay mini-batch from it and
    the solver's loss becomes ``(1/t) * current + (1 - 1/t) * replay`` (t = experiences
    seen, this one included; ``weighting="inverse_t"``) or the replay batch joins the
    mini-batch (``"concat"``). ``current`` is `strategy.loss` as it stands when this
    plugin's `before_backward` runs. After each solver update the ALI takes
    `ali_steps_per_iteration` steps with its own two Adam optimizers on the real
    mini-batch plus replay (weighted the same way); in the first experience it sees
    real data only.

    Sleep (after each experience): the latent statistics of the source are carried
    into the new latent space (old codes decoded by the frozen previous decoder and
    re-encoded by the new encoder) and the new classes' codes are added.

    Defaults: ``source`` is ``conditional`` for a class-conditional ALI and ``class_latent``
    otherwise; labels are distilled from the previous solver; the ALI's optimiser settings
    are `REPLAY_OPTIM`. Sources: ``prior`` (z ~ N(0, I), labels from the previous solver), ``class_latent``
    (a Gaussian per class over encoder codes), ``latent_memory`` (stored codes in a
    byte budget), ``conditional`` (a class-conditional ALI decoding prior codes).
    Labels: ``stored`` (the source's class), ``solver_soft`` (distillation from the
    previous solver at `temperature`), ``solver_hard`` (its argmax over old classes).

    Other arguments: `optim_cfg` (OptimConfig or mapping: the ALI's learning rates,
    betas and cycle weights), `replay_size` (replay set size, 60,000 by default: a set
    much larger than the experience keeps the solver from memorising its replay; None:
    as many as the experience's real examples, at most 10000), `replay_batch_size` (None: the
    strategy's train_mb_size), `ali_batch_size` (real examples in each ALI step, the first ones
    of the solver's mini-batch: fewer make a step cheaper, as many steps; None: all of them),
    `ali_replay_batch_size` (replayed examples in each ALI step, the first ones of the
    solver's replay batch; None: all of them),
    `memory_bytes` (latent_memory's budget), `covariance`
    (class_latent: ``diag`` or ``full``), `latent_scale` (spread of class_latent /
    prior draws: < 1 trades diversity for fidelity, and costs accuracy on split MNIST), `ali_steps_per_iteration`,
    `ali_epochs` (ALI passes per experience; None: one step per solver iteration;
    fewer than the solver's epochs stop it early, more add ALI-only epochs before the
    sleep), `first_ali_epochs` (the same for the first experience, where the ALI learns from
    scratch and trains on real data only, at half the cost of a step with replay; None:
    `ali_epochs`), `pure_replay_epochs` (solver epochs on class-balanced replay of every class
    seen, after the sleep; stored labels only), `filter_replay` (keep only generated
    examples the previous solver assigns to the class they were generated for, each class's
    share refilled from fresh draws; `last_acceptance` holds the share it recognised),
    `seed` (replay sampling).
    """

    def __init__(self, ali: ALI, optim_cfg: Any = None, source: Optional[str] = None, labels: str = "solver_soft",
                 replay_size: Optional[int] = DEFAULT_REPLAY_SIZE, replay_batch_size: Optional[int] = None,
                 ali_batch_size: Optional[int] = None, ali_replay_batch_size: Optional[int] = None,
                 weighting: str = "inverse_t", temperature: float = 2.0, memory_bytes: int = 200_000,
                 covariance: str = "diag", latent_scale: float = 1.0, ali_steps_per_iteration: int = 1,
                 ali_epochs: Optional[int] = None, first_ali_epochs: Optional[int] = None,
                 pure_replay_epochs: int = 0, filter_replay: bool = False, seed: int = 0):
        super().__init__()
        if source is None:  # the best measured source for this kind of ALI on split digits (BENCHMARKS.md)
            source = "conditional" if ali.conditional else "class_latent"
        self.source = check_choice("source", source, SOURCES)
        self.labels = check_choice("labels", labels, LABEL_MODES)
        self.weighting = check_choice("weighting", weighting, WEIGHTINGS)
        self.covariance = check_choice("covariance", covariance, COVARIANCES)
        if not isinstance(ali, ALI):
            raise ConfigError(f"ali must be an ali_replay.ali.ALI, got {type(ali).__name__}")
        if source == "prior" and labels == "stored":
            raise ConfigError("source=prior with labels=stored is invalid: prior samples carry no labels; "
                              "use labels=solver_soft or labels=solver_hard")
        if source == "conditional" and not ali.conditional:
            raise ConfigError("source=conditional needs a class-conditional ALI (model.conditional=true); "
                              "valid sources for this ALI: prior, class_latent, latent_memory")
        if source in ("class_latent", "latent_memory") and ali.encoder is None:
            raise ConfigError(f"source={source} needs an encoder, and this ALI is encoder-free; "
                              "use source=prior or source=conditional")
        if pure_replay_epochs and labels != "stored":
            raise ConfigError("pure_replay_epochs needs labels=stored (replay of every class seen, "
                              "the current ones included, which no previous solver can label)")
        for name, value, low in (("replay_size", replay_size, 1), ("replay_batch_size", replay_batch_size, 1),
                                 ("ali_batch_size", ali_batch_size, 1), ("ali_replay_batch_size", ali_replay_batch_size, 1),
                                 ("ali_epochs", ali_epochs, 0), ("first_ali_epochs", first_ali_epochs, 0)):
            if value is not None and int(value) < low:
                raise ConfigError(f"{name} must be >= {low} or null, got {value}")
        for name, value in (("ali_steps_per_iteration", ali_steps_per_iteration),
                            ("pure_replay_epochs", pure_replay_epochs), ("memory_bytes", memory_bytes)):
            if int(value) < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        if not latent_scale > 0:
            raise ConfigError(f"latent_scale must be > 0, got {latent_scale}")

        self.ali = ali
        if optim_cfg is None or isinstance(optim_cfg, (Mapping, DictConfig)):  # partial mappings keep REPLAY_OPTIM
            optim_cfg = {**REPLAY_OPTIM, **(OmegaConf.to_container(optim_cfg) if isinstance(optim_cfg, DictConfig)
                                            else dict(optim_cfg or {}))}
        self.optim_cfg = as_config(OptimConfig, optim_cfg, where="optim_cfg")
        check_optim(self.optim_cfg)
        self.optimizers = make_optimizers(ali, self.optim_cfg)
        self.replay_size = replay_size
        self.replay_batch_size = replay_batch_size
        self.ali_batch_size = ali_batch_size
        self.ali_replay_batch_size = ali_replay_batch_size
        self.temperature = float(temperature)
        self.latent_scale = float(latent_scale)
        self.memory_budget = int(memory_bytes)
        self.ali_steps_per_iteration = int(ali_steps_per_iteration)
        self.ali_epochs = ali_epochs
        self.first_ali_epochs = first_ali_epochs
        self.pure_replay_epochs = int(pure_replay_epochs)
        self.filter_replay = bool(filter_replay)
        self.last_acceptance: Optional[float] = None  # share of the latest replay's first draw the teacher recognised
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

        self.memory = LatentMemory(ali.latent_dim, self.memory_budget, seed) if source == "latent_memory" else None
        self.groups: list[tuple[int, int]] = []  # (class, task) pairs seen, in order of arrival
        self.gaussians: dict[int, dict[str, torch.Tensor]] = {}  # group -> mean and var / cov (class_latent)
        self.experiences_seen = 0
        self.replay: Optional[ReplaySet] = None
        self.last_replay: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self.last_losses: dict[str, torch.Tensor] = {}
        self.last_ali_stats: dict[str, torch.Tensor] = {}
        self._old_groups: list[tuple[int, int]] = []
        self._prev_decoder: Optional[torch.nn.Module] = None
        self._solver: Optional[torch.nn.Module] = None
        self._device = torch.device("cpu")
        self._order = torch.empty(0, dtype=torch.long)
        self._cursor = 0
        self._epoch = 0
        self._real: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self.replay_batch: Optional[ReplaySet] = None
        self._shape_checked = False
        self._players: Optional[torch.nn.Module] = None  # DistributedDataParallel wrappers under torchrun
        self._discriminator: Optional[torch.nn.Module] = None

    # ------------------------------------------------------------------ properties
    @property
    def needs_teacher(self) -> bool:
        """Whether a frozen copy of the previous solver labels or filters the replay."""
        return self.labels != "stored" or self.filter_replay

    @property
    def current_ali_epochs(self) -> Optional[int]:
        """The ALI passes of the experience under way: `first_ali_epochs` in the first, else `ali_epochs`."""
        if self.experiences_seen <= 1 and self.first_ali_epochs is not None:
            return self.first_ali_epochs
        return self.ali_epochs

    def seen_classes(self) -> list[int]:
        """Classes seen so far (sorted)."""
        return sorted({c for c, _ in self.groups})

    def memory_bytes(self) -> int:
        """Bytes the method holds besides the solver.

        ALI weights (all parameters and buffers, discriminator included), stored codes,
        Gaussian statistics, and the frozen previous-solver copy when labels come from
        it. The frozen copy of the previous decoder used within an experience by the
        sleep refresh is not counted (as Avalanche's frozen generator copy is not).
        """
        total = module_nbytes(self.ali)
        if self.memory is not None:
            total += self.memory.nbytes
        total += sum(t.numel() * t.element_size() for stats in self.gaussians.values() for t in stats.values())
        if self.needs_teacher:
            total += module_nbytes(self._solver)
        return total

    # ------------------------------------------------------------------ callbacks
    def before_training(self, strategy, *args, **kwargs):
        """Move the ALI to the strategy's device and remember the solver (for byte counts).

        Under torchrun the ALI's players and discriminator train in DistributedDataParallel
        (gradients averaged over processes, as the solver's are), and each process draws its
        own replay (seed + rank) to go with its own shard of the real data.
        """
        self._device = torch.device(strategy.device)
        self.ali.to(self._device)
        self._solver = distributed.unwrap(strategy.model)
        dist_ctx = distributed.current()
        if dist_ctx.enabled and self._players is None:
            check_optim(self.optim_cfg, distributed=True)
            players = Players(self.ali) if self.ali.encoder is not None else self.ali.decoder
            self._players = distributed.wrap(players)
            self._discriminator = distributed.wrap(self.ali.discriminator)
            self.generator.manual_seed(self.seed + 1_000_003 * dist_ctx.rank)

    def before_training_exp(self, strategy, *args, **kwargs):
        """Freeze the previous decoder and solver and generate this experience's replay set."""
        self.experiences_seen += 1
        self._epoch = 0
        self._old_groups = list(self.groups)
        current = experience_groups(strategy.experience)
        for group in current:
            if group not in self.groups:
                self.groups.append(group)
        self.replay = None
        if not self._old_groups:
            return
        if self.source in ("class_latent", "latent_memory"):
            self._prev_decoder = copy.deepcopy(self.ali.decoder).eval().requires_grad_(False)
        teacher = None
        if self.needs_teacher:
            teacher = copy.deepcopy(distributed.unwrap(strategy.model)).eval().requires_grad_(False)
        n = self.replay_size or min(len(strategy.experience.dataset), MAX_EXPERIENCE_REPLAY)
        self.replay = self._generate(n, self._old_groups, teacher)
        del teacher  # labels are computed; the copy is not needed during the experience
        self._order = torch.empty(0, dtype=torch.long)
        self._cursor = 0
        logger.info("experience %d: %d replay examples of %d old classes (source=%s, labels=%s)",
                    self.experiences_seen, len(self.replay), len(self._old_groups), self.source, self.labels)

    def before_training_epoch(self, strategy, *args, **kwargs):
        """Count epochs, so that the ALI trains only during its first `current_ali_epochs`."""
        self._epoch += 1

    def before_training_iteration(self, strategy, *args, **kwargs):
        """Keep the real mini-batch for the ALI and draw this iteration's replay mini-batch."""
        mbatch = strategy.mbatch
        if not self._shape_checked:
            self._check_shape(mbatch[0])
        self._real = (mbatch[0], mbatch[1])
        self.replay_batch = None
        if self.replay is None:
            return
        size = self.replay_batch_size or strategy.train_mb_size
        self.replay_batch = self.replay.batch(self._next_indices(size))
        if self.weighting == "concat" and not self.replay_batch.soft:
            # Hard labels join the mini-batch: the template's own criterion (and metrics) see them.
            mbatch[0] = torch.cat([mbatch[0], self.replay_batch.images])
            mbatch[1] = torch.cat([mbatch[1], self.replay_batch.targets.to(mbatch[1].dtype)])
            if len(mbatch) >= 3:
                mbatch[-1] = torch.cat([mbatch[-1], self.replay_batch.tasks.to(mbatch[-1].dtype)])

    def before_backward(self, strategy, *args, **kwargs):
        """Combine the current loss with the replay loss computed on the replay mini-batch."""
        batch = self.replay_batch
        if batch is None or (self.weighting == "concat" and not batch.soft):
            return
        current = strategy.loss
        replay = self.replay_loss(strategy.model, batch)
        if self.weighting == "inverse_t":
            t = self.experiences_seen
            strategy.loss = current / t + (1.0 - 1.0 / t) * replay
        else:
            # concat with soft targets: the example-weighted mean a concatenated batch would give.
            n_cur, n_rep = len(self._real[0]), len(batch)
            strategy.loss = (n_cur * current + n_rep * replay) / (n_cur + n_rep)
        self.last_losses = {"current": current.detach(), "replay": replay.detach(),
                            "total": strategy.loss.detach()}

    def after_training_iteration(self, strategy, *args, **kwargs):
        """Update the ALI on the real mini-batch plus its own replay."""
        epochs = self.current_ali_epochs
        if epochs is not None and self._epoch > epochs:
            return
        x, y = self._real
        if self.ali_batch_size is not None:
            x, y = x[:self.ali_batch_size], y[:self.ali_batch_size]
        for step in range(self.ali_steps_per_iteration):
            batch = self.replay_batch
            if batch is not None and self.ali_replay_batch_size is not None:
                batch = batch.take(slice(0, self.ali_replay_batch_size))
            if step > 0 and batch is not None:
                batch = self.replay.batch(self._next_indices(len(batch)))
            self._ali_step(x, y, batch)

    def after_training_exp(self, strategy, *args, **kwargs):
        """Extra ALI epochs if asked, then the sleep refresh, then optional pure-replay solver epochs."""
        extra = (self.current_ali_epochs or 0) - strategy.train_epochs
        if extra > 0:
            self._extra_ali_epochs(strategy, extra)
        self.sleep(strategy)
        if self.pure_replay_epochs:
            self._pure_replay(strategy)
        self.replay = None
        self.replay_batch = None
        self._real = None
        self._prev_decoder = None

    # ------------------------------------------------------------------ losses
    def replay_loss(self, model: torch.nn.Module, batch: ReplaySet) -> torch.Tensor:
        """The solver's loss on a replay batch: cross-entropy on hard labels, or distillation."""
        output = avalanche_forward(model, batch.images, batch.tasks)
        if batch.soft:
            return distillation_loss(output, batch.targets, batch.kd_mask, self.temperature)
        return F.cross_entropy(output, batch.targets)

    def ali_weights(self, n_real: int, n_replay: int) -> Optional[torch.Tensor]:
        """Per-example weights giving real and replayed pairs the solver's 1/t and 1 - 1/t."""
        if self.weighting != "inverse_t" or n_replay == 0:
            return None
        t = self.experiences_seen
        w_real = torch.full((n_real,), (1.0 / t) / n_real)
        w_replay = torch.full((n_replay,), (1.0 - 1.0 / t) / n_replay)
        return torch.cat([w_real, w_replay]).to(self._device)

    def _ali_step(self, x: torch.Tensor, y: torch.Tensor, batch: Optional[ReplaySet]) -> None:
        """One ALI update (`ali_replay.training.train_step`) on real data plus a replay batch."""
        weight = None
        if batch is not None:
            weight = self.ali_weights(len(x), len(batch))
            x = torch.cat([x, batch.images])
            y = torch.cat([y.to(batch.classes.dtype), batch.classes])
        self.ali.train()
        self.last_ali_stats = train_step(self.ali, self.optimizers, self.optim_cfg, x, y, weight,
                                         players=self._players, discriminator=self._discriminator)

    # ------------------------------------------------------------------ replay generation
    def _next_indices(self, size: int) -> torch.Tensor:
        """The next `size` replay indices, walking through reshuffled passes over the set."""
        picks = []
        while size > 0:
            if self._cursor >= len(self._order):
                self._order = torch.randperm(len(self.replay), generator=self.generator)
                self._cursor = 0
            take = self._order[self._cursor:self._cursor + size]
            self._cursor += len(take)
            size -= len(take)
            picks.append(take)
        return torch.cat(picks).to(self._device)

    def _balanced_groups(self, n: int, groups: list[int]) -> torch.Tensor:
        """n group indices, an equal count for each group (the remainder to random ones)."""
        counts = torch.full((len(groups),), n // len(groups), dtype=torch.long)
        counts[torch.randperm(len(groups), generator=self.generator)[: n - int(counts.sum())]] += 1
        return torch.repeat_interleave(torch.as_tensor(groups, dtype=torch.long), counts)

    def _sample_codes(self, n: int, groups: list[int]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """n latent codes and their group indices (None when the source knows no classes)."""
        if self.source == "latent_memory":
            codes, group_idx = self.memory.sample(n, self.generator)
            return codes, group_idx
        if self.source == "class_latent":
            group_idx = self._balanced_groups(n, groups)
            codes = torch.empty(n, self.ali.latent_dim)
            for g in groups:
                rows = torch.nonzero(group_idx == g).flatten()
                codes[rows] = self._gaussian_sample(self.gaussians[g], len(rows), self.latent_scale)
            return codes, group_idx
        codes = self.latent_scale * torch.randn(n, self.ali.latent_dim, generator=self.generator)
        if self.source == "conditional":
            return codes, self._balanced_groups(n, groups)
        return codes, None

    def _gaussian_sample(self, stats: dict[str, torch.Tensor], n: int, scale: float = 1.0) -> torch.Tensor:
        """n draws from a class Gaussian (diagonal or full covariance), spread scaled by `scale`."""
        eps = scale * torch.randn(n, stats["mean"].shape[0], generator=self.generator)
        if "cov" in stats:
            return stats["mean"] + eps @ torch.linalg.cholesky(stats["cov"]).T
        return stats["mean"] + eps * stats["var"].sqrt()

    def _decode(self, decoder: torch.nn.Module, codes: torch.Tensor, classes: Optional[torch.Tensor]) -> torch.Tensor:
        """Decode codes in batches, in eval mode, without autograd history, into uint8 images.

        Stored as uint8, as the data sets store theirs: a replay set takes a quarter of the
        memory of float32 (60,000 CIFAR-10 images: 184 MB instead of 737 MB).
        """
        out = []
        with evaluating(decoder):
            for start in range(0, len(codes), GENERATION_BATCH):
                z = codes[start:start + GENERATION_BATCH].to(self._device)
                y = classes[start:start + GENERATION_BATCH].to(self._device) if self.ali.conditional else None
                out.append(decoder(z, y).mul(255).round_().to(torch.uint8))
        return torch.cat(out) if out else torch.empty(0, *self.ali.shape, dtype=torch.uint8, device=self._device)

    def _encode(self, images: torch.Tensor, classes: Optional[torch.Tensor]) -> torch.Tensor:
        """Posterior means of the current encoder, in batches, in eval mode (on the CPU)."""
        out = []
        with evaluating(self.ali):
            for start in range(0, len(images), GENERATION_BATCH):
                x = images[start:start + GENERATION_BATCH].to(self._device)
                y = classes[start:start + GENERATION_BATCH].to(self._device) if self.ali.conditional else None
                out.append(self.ali.encode(x, y).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.ali.latent_dim)

    @torch.no_grad()
    def _generate(self, n: int, groups: list[tuple[int, int]], teacher: Optional[torch.nn.Module]) -> ReplaySet:
        """A replay set of n examples of the given (class, task) groups, made under no_grad.

        With `filter_replay` (and a teacher) only examples the previous solver assigns to the
        class they were generated for are kept, each group's share refilled from fresh draws.
        """
        replay, hard, group_idx = self._draw(n, groups, teacher)
        self.last_acceptance = None
        if teacher is not None and self.filter_replay and group_idx is not None:
            replay, hard = self._keep_recognised(replay, hard, group_idx, groups, teacher)
        order = torch.randperm(len(replay), generator=self.generator).to(self._device)  # mixed classes
        replay = replay.take(order)
        preview = replay.batch(torch.arange(min(PREVIEW_SIZE, len(replay)), device=self._device))
        self.last_replay = (preview.images.cpu(), hard[order][:PREVIEW_SIZE].cpu())
        return replay

    def _draw(self, n: int, groups: list[tuple[int, int]], teacher: Optional[torch.nn.Module]
              ) -> tuple[ReplaySet, torch.Tensor, Optional[torch.Tensor]]:
        """n freshly decoded examples, the teacher's hard labels (or the classes) and their groups.

        The group indices are None where the source picks no class (unconditional prior codes:
        the teacher's verdict is the class).
        """
        group_ids = [self.groups.index(g) for g in groups]
        codes, group_idx = self._sample_codes(n, group_ids)
        group_class = torch.as_tensor([c for c, _ in self.groups], dtype=torch.long)
        group_task = torch.as_tensor([t for _, t in self.groups], dtype=torch.long)
        conditioned = group_idx is not None or self.ali.conditional
        if group_idx is None:
            # Prior codes: pick the task (and the condition of a conditional ALI) uniformly.
            group_idx = torch.as_tensor(group_ids)[torch.randint(len(group_ids), (n,), generator=self.generator)]
        classes, tasks = group_class[group_idx], group_task[group_idx]
        images = self._decode(self.ali.decoder, codes, classes)
        targets, kd_mask, hard = classes, None, classes
        if teacher is not None:
            targets, kd_mask, hard = self._teacher_labels(teacher, images, tasks, groups)
            if not conditioned:
                classes = hard  # no condition was used: the class is the teacher's verdict
            if self.labels == "stored":
                targets, kd_mask = classes, None  # the teacher only judged (filter_replay)
        replay = ReplaySet(images, targets.to(self._device), classes.to(self._device), tasks.to(self._device),
                           None if kd_mask is None else kd_mask.to(self._device))
        return replay, hard.to(self._device), group_idx if conditioned else None

    def _keep_recognised(self, replay: ReplaySet, hard: torch.Tensor, group_idx: torch.Tensor,
                         groups: list[tuple[int, int]], teacher: torch.nn.Module) -> tuple[ReplaySet, torch.Tensor]:
        """The examples whose teacher label is their class, an equal share per group.

        Up to `FILTER_ROUNDS` fresh draws fill each group's share; a share still short
        after them is topped up with that group's rejected examples, so the set keeps its size.
        """
        group_ids = [self.groups.index(g) for g in groups]
        quota = torch.bincount(self._balanced_groups(len(replay), group_ids), minlength=len(self.groups))
        kept: dict[int, list[torch.Tensor]] = {g: [] for g in group_ids}  # accepted rows per group, per round
        spare: dict[int, list[torch.Tensor]] = {g: [] for g in group_ids}  # rejected rows, for a top-up
        draws, have = [], torch.zeros_like(quota)
        for round_ in range(FILTER_ROUNDS):
            if round_:
                replay, hard, group_idx = self._draw(len(replay), groups, teacher)
            ok = (hard == replay.classes).cpu()
            draws.append((replay, hard, ok))
            for g in group_ids:
                rows = torch.nonzero(ok & (group_idx == g)).flatten()[: int(quota[g] - have[g])]
                have[g] += len(rows)
                kept[g].append(rows)
                spare[g].append(torch.nonzero(~ok & (group_idx == g)).flatten()[: int(quota[g])])
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
                rows = rows.to(self._device)
                parts.append((replay.take(rows), hard[rows]))
        self.last_acceptance = float(draws[0][2].float().mean())
        logger.info("replay filter: the previous solver recognised %.1f%% of the first draw; %d draw(s)",
                    100 * self.last_acceptance, len(draws))
        return ReplaySet.cat([p for p, _ in parts]), torch.cat([h for _, h in parts])

    def _class_mask(self, groups: list[tuple[int, int]], tasks: torch.Tensor, width: int) -> torch.Tensor:
        """Per example, the classes of its task among `groups` (N x width bool)."""
        mask = torch.zeros(len(tasks), width, dtype=torch.bool)
        for c, t in groups:
            if c < width:
                mask[tasks.cpu() == t, c] = True
        return mask

    @torch.no_grad()
    def _teacher_labels(self, teacher: torch.nn.Module, images: torch.Tensor, tasks: torch.Tensor,
                        old_groups: list[tuple[int, int]]) -> tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """The previous solver's targets: (hard labels or logits, distillation mask, hard labels).

        Hard labels are the argmax over the old classes of the example's task: the
        previous solver never learnt the current ones.
        """
        logits = torch.cat([
            avalanche_forward(teacher, as_float_images(images[s:s + GENERATION_BATCH]),
                              tasks[s:s + GENERATION_BATCH].to(self._device))
            for s in range(0, len(images), GENERATION_BATCH)
        ]).float()
        old_mask = self._class_mask(old_groups, tasks, logits.shape[1]).to(self._device)
        hard = logits.masked_fill(~old_mask, float("-inf")).argmax(1)
        if self.labels == "solver_hard":
            return hard, None, hard
        # Distil over every class seen so far: the teacher's (near-zero) scores for the
        # current classes tell the student that replayed examples are not of those classes.
        width = max(logits.shape[1], max(c for c, _ in self.groups) + 1)
        return logits, self._class_mask(self.groups, tasks, width), hard

    # ------------------------------------------------------------------ sleep
    def sleep(self, strategy) -> None:
        """Carry old latent statistics into the new latent space and add the new classes'."""
        if self.source not in ("class_latent", "latent_memory"):
            return
        images, classes, tasks = self._experience_tensors(strategy.experience)
        group_of = {g: i for i, g in enumerate(self.groups)}
        group_idx = torch.as_tensor([group_of[(int(c), int(t))] for c, t in zip(classes, tasks)], dtype=torch.long)
        group_class = torch.as_tensor([c for c, _ in self.groups], dtype=torch.long)
        codes = self._encode(images, classes)
        if self.source == "latent_memory":
            if len(self.memory) and self._prev_decoder is not None:
                old_classes = group_class[self.memory.labels.long()]
                self.memory.replace_codes(self._refresh(self.memory.codes.float(), old_classes))
            self.memory.add(codes, group_idx)
            return
        refreshed: dict[int, torch.Tensor] = {}
        if self._prev_decoder is not None:
            for g, stats in self.gaussians.items():
                z_old = self._gaussian_sample(stats, max(REFRESH_SAMPLES, 4 * self.ali.latent_dim))
                refreshed[g] = self._refresh(z_old, group_class[g].expand(len(z_old)))
        for g in torch.unique(group_idx).tolist():
            new = codes[group_idx == g]
            refreshed[g] = torch.cat([refreshed[g], new]) if g in refreshed else new
        self.gaussians = {g: self._fit_gaussian(z) for g, z in sorted(refreshed.items())}

    def _refresh(self, codes: torch.Tensor, classes: Optional[torch.Tensor]) -> torch.Tensor:
        """Old codes carried into the new latent space (see `refresh_codes`)."""
        return refresh_codes(self._prev_decoder, self.ali, codes, classes, self._device)

    def _fit_gaussian(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean and variance (or covariance) of codes, with a small floor for stability."""
        mean = codes.mean(0)
        if self.covariance == "full":
            if len(codes) < 2:
                return {"mean": mean, "cov": 1e-3 * torch.eye(len(mean))}
            return {"mean": mean, "cov": torch.cov(codes.T) + 1e-4 * torch.eye(len(mean))}
        var = codes.var(0, unbiased=len(codes) > 1) if len(codes) > 1 else torch.full_like(mean, 1e-3)
        return {"mean": mean, "var": var.clamp_min(1e-6)}

    @torch.no_grad()
    def _experience_tensors(self, experience) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All images (eval transforms), labels and task labels of an experience."""
        dataset = experience.dataset.eval()
        loader = DataLoader(dataset, batch_size=GENERATION_BATCH, shuffle=False,
                            collate_fn=getattr(dataset, "collate_fn", None))
        xs, ys, ts = [], [], []
        for batch in loader:
            xs.append(batch[0])
            ys.append(torch.as_tensor(batch[1]).long())
            ts.append(torch.as_tensor(batch[-1]).long() if len(batch) >= 3 else torch.zeros_like(ys[-1]))
        return torch.cat(xs), torch.cat(ys), torch.cat(ts)

    # ------------------------------------------------------------------ extra phases
    def _extra_ali_epochs(self, strategy, epochs: int) -> None:
        """ALI-only passes over the experience (plus replay) after the solver's epochs."""
        dataset = strategy.experience.dataset.train()
        size = strategy.train_mb_size
        seed = self.seed + self.experiences_seen
        dist_ctx = distributed.current()
        sampler = (DistributedSampler(dataset, dist_ctx.world_size, dist_ctx.rank, shuffle=True, seed=seed)
                   if dist_ctx.enabled else None)  # each process its shard, as in the solver's epochs
        loader = DataLoader(dataset, batch_size=size, shuffle=sampler is None, sampler=sampler,
                            collate_fn=getattr(dataset, "collate_fn", None),
                            generator=torch.Generator().manual_seed(seed))
        for epoch in range(epochs):
            if sampler is not None:
                sampler.set_epoch(epoch)
            for batch in loader:
                x, y = batch[0].to(self._device), torch.as_tensor(batch[1]).long().to(self._device)
                if self.ali_batch_size is not None:  # as in the solver's epochs: the mini-batch's first examples
                    x, y = x[:self.ali_batch_size], y[:self.ali_batch_size]
                for _ in range(max(1, self.ali_steps_per_iteration)):
                    replay = None
                    if self.replay is not None:
                        n = self.ali_replay_batch_size or self.replay_batch_size or size
                        replay = self.replay.batch(self._next_indices(n))
                    self._ali_step(x, y, replay)

    def _pure_replay(self, strategy) -> None:
        """Solver epochs on class-balanced replay of every class seen so far (after the sleep)."""
        n = self.replay_size or min(len(strategy.experience.dataset), MAX_EXPERIENCE_REPLAY)
        replay = self._generate(n, list(self.groups), None)
        model, size = strategy.model, strategy.train_mb_size
        model.train()
        for _ in range(self.pure_replay_epochs):
            order = torch.randperm(len(replay), generator=self.generator).to(self._device)
            for start in range(0, len(replay), size):
                batch = replay.batch(order[start:start + size])
                strategy.optimizer.zero_grad()
                loss = self.replay_loss(model, batch)
                loss.backward()
                strategy.optimizer.step()

    def _check_shape(self, x: torch.Tensor) -> None:
        """Fail early when the ALI's image shape differs from the data's."""
        if tuple(x.shape[1:]) != tuple(self.ali.shape):
            raise ShapeError(f"the ALI generates images of shape {tuple(self.ali.shape)} but the stream's "
                             f"images are {tuple(x.shape[1:])}; build the ALI for the data's shape")
        self._shape_checked = True
