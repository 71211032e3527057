"""Process-level settings shared by every command: device, seeds and threads; and inference mode."""
from __future__ import annotations

import contextlib
import functools
import logging
import random
from typing import Iterator

import numpy as np
import torch

from ali_replay.errors import ConfigError

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when a GPU is visible, else the CPU; `cuda:N` selects a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu" or name.startswith("cuda"):
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={name} was asked for but no CUDA GPU is visible; use device=cpu or auto")
        return torch.device(name)
    raise ConfigError(f"unknown device '{name}'; valid: {', '.join(DEVICES)} (or cuda:N)")


@contextlib.contextmanager
def evaluating(*modules: torch.nn.Module) -> Iterator[None]:
    """Run a block in eval mode (BatchNorm running statistics, no dropout) and without autograd.

    Each module gets its own train/eval mode back on exit, exceptions included.
    """
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> None:
    """Limit PyTorch's intra-op threads (None keeps the default)."""
    if threads:
        torch.set_num_threads(int(threads))
    log.info("torch threads: %d", torch.get_num_threads())


def rng_state() -> dict:
    """The global generators' states, for exact resume."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the global generators saved by `rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@functools.lru_cache(maxsize=None)
def has_bf16_units(device_type: str) -> bool:
    """Whether a device type computes bfloat16 natively: a CUDA GPU that supports it, or a CPU whose
    instruction set has AVX-512 BF16 or AMX (read from /proc/cpuinfo; False where that is absent)."""
    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device_type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.lru_cache(maxsize=None)
def compute_precision(precision: str, device_type: str) -> str:
    """The precision forward passes run in: `auto` is bfloat16 where the device has bf16 units, else float32."""
    if precision != "auto":
        return precision
    chosen = "bfloat16" if has_bf16_units(device_type) else "float32"
    log.info("precision auto on %s: %s (%s)", device_type, chosen,
             "bf16 units found" if chosen == "bfloat16" else "no bf16 units: emulated bf16 would be slower")
    return chosen
