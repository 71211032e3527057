"""What a strategy keeps between experiences besides its solver, in bytes by kind."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

# Stored images are counted as uint8 (one byte per pixel value, the dtype the data sets
# hold them in, see ali_replay.data.ImageDataset) plus an int64 label each.
PIXEL_BYTES = 1
LABEL_BYTES = 8


@dataclass(frozen=True)
class KeptBytes:
    """Bytes kept between experiences, by kind; `total` is what `memory_bytes` reports.

    generator: the weights of the generative model (an ALI's or GAN's with its discriminator,
    a VAE's). stored_examples: real examples or what stands for them (uint8 images and int64
    labels; encoder codes of real images, float16, and their int16 labels). statistics: what a
    replay source keeps about the classes instead of examples (per-class means and covariances,
    float32). teacher: the frozen previous solver kept to label, filter or distil replay; a copy
    of the solver, not a memory of the data, so a kind of its own.
    """

    generator: int = 0
    stored_examples: int = 0
    statistics: int = 0
    teacher: int = 0

    @property
    def total(self) -> int:
        """Every kind added up."""
        return sum(self.as_dict().values())

    def as_dict(self) -> dict[str, int]:
        """The kinds in order, as plain ints (results.json's `memory`)."""
        return {key: int(value) for key, value in dataclasses.asdict(self).items()}


MEMORY_KINDS = tuple(f.name for f in dataclasses.fields(KeptBytes))


def module_nbytes(module: Optional[torch.nn.Module]) -> int:
    """Bytes of all parameters and buffers of a module (0 for None)."""
    if module is None:
        return 0
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def stored_example_bytes(pixels: int) -> int:
    """Bytes one stored example of `pixels` values takes: uint8 pixels plus an int64 label."""
    return pixels * PIXEL_BYTES + LABEL_BYTES


def dataset_bytes(dataset) -> int:
    """Bytes the examples of a dataset take when stored (see `stored_example_bytes`)."""
    if dataset is None or not len(dataset):
        return 0
    return len(dataset) * stored_example_bytes(int(dataset[0][0].numel()))
