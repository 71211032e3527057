"""The standalone ALI trainer: loop, progress, checkpoints, metrics and pictures."""
from __future__ import annotations

import copy
import csv
import logging
import math
import signal
import threading
import time
import weakref
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from ali_replay.ali import ALI, build_ali
from ali_replay.checkpoint import load_checkpoint, save_checkpoint
from ali_replay.config import ALIRunConfig, check_ranges
from ali_replay.data import DataSplits, load_dataset
from ali_replay import distributed
from ali_replay.distributed import init_from_env
from ali_replay.errors import ConfigError, UserError
from ali_replay.guard import Divergence, check_epoch
from ali_replay.pictures import save_interpolations, save_reconstructions, save_samples
from ali_replay.run_lock import RunLock
from ali_replay.runtime import resolve_device, rng_state, seed_everything, set_rng_state, set_threads
from ali_replay.update import ALIOptimizers, Players, check_optim, make_optimizers, train_step

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
# Keys that may differ between a run and its resumption without changing what is learned.
RESUMABLE_KEYS = ("train.epochs", "train.max_steps", "train.log_every", "train.image_every", "device",
                  "threads", "output_dir", "eval", "guard")


def _comparable(cfg: dict) -> dict:
    """The config without the keys a resumed run may change."""
    cfg = OmegaConf.create(cfg)
    for key in RESUMABLE_KEYS:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if node is not None and leaf in node:
            node.pop(leaf)
    return OmegaConf.to_container(cfg)


def build_from_config(cfg: DictConfig, data: DataSplits, device: torch.device) -> tuple[ALI, ALIOptimizers]:
    """The ALI and its optimizers that a config describes, for a given data set."""
    ali = build_ali(data.shape, cfg.model, data.num_classes).to(device)
    return ali, make_optimizers(ali, cfg.optim)


class ALITrainer:
    """Trains one ALI on one data set, writing everything into `cfg.output_dir`."""

    def __init__(self, cfg: DictConfig, resume: bool = False, overwrite: bool = False):
        check_ranges(cfg, ALIRunConfig)  # a config built in code gets the checks load_run_config makes
        self._lock: Optional[RunLock] = None  # rank 0's hold on the output folder
        try:
            self._setup(cfg, resume, overwrite)
        except BaseException:
            self.close()  # a start that fails (bad data, Ctrl-C) frees the folder at once
            raise
        if self._lock is not None:  # a trainer dropped without fit() frees the folder when collected
            weakref.finalize(self, self._lock.release)

    def _setup(self, cfg: DictConfig, resume: bool, overwrite: bool) -> None:
        """Device, output folder, data, networks and (with `resume`) the saved state."""
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.dist = init_from_env(resolve_device(cfg.device))
        self.device = self.dist.device(resolve_device(cfg.device))
        set_threads(cfg.threads)
        self._lock_output_dir()
        self._check_output_dir(resume, overwrite)
        seed_everything(cfg.seed)
        self.data = load_dataset(cfg.data.name, cfg.data.root, cfg.data.download, cfg.data.path)
        self.ali, self.optimizers = build_from_config(cfg, self.data, self.device)
        check_optim(cfg.optim, self.dist.enabled)
        self.local_batch = self.dist.local_batch(cfg.train.batch_size)
        if cfg.train.batch_size > len(self.data.train):  # an epoch would hold no full batch, so no update
            raise ConfigError(f"train.batch_size={cfg.train.batch_size} is more than the {len(self.data.train)} "
                              f"training images of {cfg.data.name}; choose at most {len(self.data.train)}")
        self.players = self.discriminator = None  # the ALI's own networks, unless distributed
        if self.dist.enabled:
            self.players = distributed.wrap(Players(self.ali))
            self.discriminator = distributed.wrap(self.ali.discriminator)
            torch.manual_seed(cfg.seed + self.dist.rank)  # same weights everywhere, different noise per rank
        # Everything sits on the device once: per-batch indexing then costs no copies or workers.
        self.x_train = self.data.train.float_images().to(self.device)
        self.y_train = self.data.train.targets.to(self.device)
        self.shuffle = torch.Generator().manual_seed(cfg.seed)
        self.epoch, self.step = 0, 0
        self.rollbacks, self.lr_scale = 0, 1.0
        self.writer = None
        self._interrupted = False
        if resume and (self.out / CHECKPOINT).is_file():
            self._restore(load_checkpoint(self.out / CHECKPOINT, self.device))

    # ------------------------------------------------------------------ state

    def _lock_output_dir(self) -> None:
        """Rank 0 takes the output folder's lock (other ranks never write); every rank stops if it is taken."""
        error = None
        if self.dist.is_main:
            try:
                self._lock = self._lock or RunLock(self.out)
                self._lock.acquire()  # a no-op while held
            except UserError as err:
                if not self.dist.enabled:
                    raise
                error = str(err)
        error = distributed.broadcast_object(error)
        if error is not None:
            raise UserError(error)

    def close(self) -> None:
        """Let go of the output folder; `fit` does this when it returns, fails or is interrupted."""
        if self._lock is not None:
            self._lock.release()

    def _check_output_dir(self, resume: bool, overwrite: bool) -> None:
        """Refuse to mix a new run into a folder that holds another one."""
        ckpt = self.out / CHECKPOINT
        if not ckpt.exists() or resume:
            return
        if not overwrite:
            raise ConfigError(
                f"{self.out} already holds a training run ({ckpt.name}); pass --resume to continue it, "
                f"--overwrite to start again there, or choose another output_dir"
            )
        if not self.dist.is_main:
            return
        for name in (CHECKPOINT, METRICS):
            (self.out / name).unlink(missing_ok=True)
        for events in self.out.glob("events.out.tfevents.*"):
            events.unlink()

    def state_dict(self) -> dict:
        """Everything needed to continue exactly where training stopped."""
        return {
            "format": "ali-replay/ali-checkpoint/1",
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "shape": self.data.shape,
            "num_classes": self.data.num_classes,
            "model": self.ali.state_dict(),
            "optimizers": self.optimizers.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "rollbacks": self.rollbacks,
            "lr_scale": self.lr_scale,
            "rng": rng_state(),
            "shuffle_rng": self.shuffle.get_state(),
        }

    def _restore(self, state: dict) -> None:
        """Load a checkpoint written by `state_dict`, after checking it belongs to this config."""
        saved, now = _comparable(state["config"]), _comparable(OmegaConf.to_container(self.cfg, resolve=True))
        if saved != now:
            raise ConfigError(
                f"{self.out / CHECKPOINT} was trained with a different config; resume with the same "
                f"config (only {', '.join(RESUMABLE_KEYS)} may change) or use --overwrite"
            )
        self.ali.load_state_dict(state["model"])
        self.optimizers.load_state_dict(state["optimizers"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.rollbacks, self.lr_scale = state.get("rollbacks", 0), state.get("lr_scale", 1.0)
        set_rng_state(state["rng"])
        self.shuffle.set_state(state["shuffle_rng"])
        log.info("resumed from %s at epoch %d (step %d)", self.out / CHECKPOINT, self.epoch, self.step)

    # ------------------------------------------------------------------ loop

    def fit(self) -> Path:
        """Train for `train.epochs` epochs (or `train.max_steps` updates); return the run folder."""
        cfg = self.cfg
        self._lock_output_dir()  # again after an earlier fit() let go of the folder
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            from torch.utils.tensorboard import SummaryWriter  # heavy import, only when training

            self.writer = SummaryWriter(str(self.out))
        # Ctrl-C only raises a flag: training stops between two updates, never inside a file write.
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            pictured = False
            good = copy.deepcopy(self.state_dict())  # what a divergence rolls back to
            while self.epoch < cfg.train.epochs and not self._done():
                try:
                    row = self._train_epoch()
                    reason = check_epoch(row, self.ali, self.x_train, cfg.guard) if cfg.guard.enabled else None
                    if reason:
                        raise Divergence(reason)
                except Divergence as divergence:
                    self._roll_back(good, str(divergence))
                    continue
                self.epoch += 1
                good = copy.deepcopy(self.state_dict())
                pictured = self.epoch % cfg.train.image_every == 0
                if self.dist.is_main:  # one writer
                    self._log_epoch(row)
                    save_checkpoint(good, self.out / CHECKPOINT)
                    if pictured:
                        self.write_pictures()
            if not pictured and self.dist.is_main:
                self.write_pictures()
        except KeyboardInterrupt:
            log.warning("interrupted: the last completed epoch (%d) is saved in %s; --resume continues",
                        self.epoch, self.out / CHECKPOINT)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if self.writer is not None:
                self.writer.close()
            self.close()
        return self.out

    def _on_sigint(self, signum, frame) -> None:
        """First Ctrl-C: stop at the next update boundary; a second one stops at once."""
        if self._interrupted:
            raise KeyboardInterrupt
        self._interrupted = True

    def _roll_back(self, good: dict, reason: str) -> None:
        """Restore the last good epoch and lower the learning rates, or give up after too many tries."""
        guard = self.cfg.guard
        if self.rollbacks >= guard.max_rollbacks:
            raise UserError(
                f"training diverged again in epoch {self.epoch + 1} ({reason}) after {self.rollbacks} rollbacks; "
                f"the last good epoch ({self.epoch}) is in {self.out / CHECKPOINT}: lower train.lr, raise "
                f"guard.max_rollbacks, or loosen the guard thresholds"
            )
        self.rollbacks += 1
        self.ali.load_state_dict(good["model"])
        self.optimizers.load_state_dict(good["optimizers"])
        self.step = good["step"]
        self.lr_scale *= guard.lr_factor
        for opt, base in ((self.optimizers.d, self.cfg.optim.lr_d), (self.optimizers.g, self.cfg.optim.lr_g)):
            for group in opt.param_groups:
                group["lr"] = base * self.lr_scale
        log.warning("divergence in epoch %d: %s; rolled back to epoch %d with learning rates x%.3g (rollback %d/%d)",
                    self.epoch + 1, reason, self.epoch, self.lr_scale, self.rollbacks, guard.max_rollbacks)

    def _done(self) -> bool:
        return self.cfg.train.max_steps is not None and self.step >= self.cfg.train.max_steps

    def _train_epoch(self) -> dict[str, float]:
        """One pass over the shuffled training set; returns the epoch's mean losses and speed."""
        cfg = self.cfg
        self.ali.train()
        n, bs = len(self.x_train), cfg.train.batch_size
        order = torch.randperm(n, generator=self.shuffle).to(self.device)
        batches = n // bs  # drop the ragged last batch: BatchNorm and D prefer equal batch sizes
        sums: dict[str, torch.Tensor] = {}
        started, steps = time.perf_counter(), 0
        bar = tqdm(range(batches), desc=f"epoch {self.epoch + 1}/{cfg.train.epochs}", leave=False,
                   disable=not self.dist.is_main,
                   dynamic_ncols=True)
        for i in bar:
            if self._interrupted:
                raise KeyboardInterrupt
            if self._done():
                break
            # Every rank draws the same global batch and trains on its own contiguous share of it.
            start = i * bs + self.dist.rank * self.local_batch
            idx = order[start:start + self.local_batch]
            stats = train_step(self.ali, self.optimizers, cfg.optim, self.x_train[idx], self.y_train[idx],
                               players=self.players, discriminator=self.discriminator)
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
            self.step += 1
            steps += 1
            if steps % cfg.train.log_every == 0:
                means = {k: self.dist.mean(v / steps).item() for k, v in sums.items()}  # ranks agree
                if cfg.guard.enabled and not all(math.isfinite(v) for v in means.values()):
                    raise Divergence(f"non-finite losses at step {self.step}")
                bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()})
        bar.close()
        row = {k: self.dist.mean(v / max(1, steps)).item() for k, v in sums.items()}
        elapsed = time.perf_counter() - started
        row.update(seconds=elapsed, images_per_second=steps * bs / max(elapsed, 1e-9), rollbacks=self.rollbacks)
        return row

    def _log_epoch(self, row: dict[str, float]) -> None:
        """Append one row to metrics.csv and TensorBoard."""
        # The seed goes in every row, so that a metrics.csv alone tells which run it came from.
        row = {"epoch": self.epoch, "step": self.step, "seed": self.cfg.seed, **row}
        path = self.out / METRICS
        new = not path.exists()
        # A resumed run keeps the columns its file already has (older runs lack the seed column).
        fields = list(row)
        if not new:
            with path.open(newline="") as existing:
                fields = next(csv.reader(existing), None) or fields
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        for key, value in row.items():
            if key not in ("epoch", "step", "seed"):
                self.writer.add_scalar(f"train/{key}", value, self.step)
        log.info("epoch %d: %s", self.epoch, ", ".join(f"{k}={v:.4g}" for k, v in row.items()))

    def write_pictures(self, n: int = 64) -> None:
        """samples.png, reconstructions.png and interpolations.png from fixed test images."""
        test = self.data.test
        picks = torch.linspace(0, len(test) - 1, min(n, len(test))).long()
        x = test.float_images()[picks].to(self.device)
        y = test.targets[picks].to(self.device)
        # Pictures draw from their own generator so that they never change the training's random stream.
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.cfg.seed)
            save_samples(self.ali, self.out / "samples.png")
            save_reconstructions(self.ali, x[:32], self.out / "reconstructions.png", y[:32])
            save_interpolations(self.ali, x[:16], self.out / "interpolations.png", y[:16])
        self.ali.train()


def load_trained(run_dir: str | Path, device: Optional[torch.device] = None) -> tuple[ALI, DictConfig, dict]:
    """The ALI saved in a run folder, with its config and checkpoint state."""
    state = load_checkpoint(Path(run_dir) / CHECKPOINT, device or "cpu")
    cfg = OmegaConf.create(state["config"])
    ali = build_ali(tuple(state["shape"]), cfg.model, state["num_classes"])
    ali.load_state_dict(state["model"])
    return ali.to(device or "cpu").eval(), cfg, state
