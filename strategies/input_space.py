"""The solver's input space: how the images a stream feeds the solver map to the generator's [0, 1] and back.

A generator decodes through a sigmoid, so it learns and replays images in [0, 1]. A
stream may feed the solver something else: Avalanche's SplitMNIST normalises with
MNIST's mean and standard deviation, SplitCIFAR10 normalises per channel after a
zero-padded random crop and a flip. `InputSpace` is the per-channel affine map between
the two; `infer_input_space` works it out from a dataset's transforms (a torchvision
`Normalize`) or, failing that, from the value range of its images.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Optional, Sequence

import torch
from avalanche.models.generator import Generator
from torch import nn
from torch.utils.data import DataLoader, Subset

from ali_replay.errors import DataError, UserError

logger = logging.getLogger(__name__)

SAMPLE_IMAGES = 2048  # images read to infer or verify a space from data (spread over the dataset)
SAMPLE_BATCH = 256
TOLERANCE = 0.02  # share of a channel's range images may overshoot it (float rounding, interpolating augmentations)
UNIT_SLACK = 1e-3  # values this far outside [0, 1] still count as [0, 1] images
MIN_WIDTH, MAX_WIDTH = 0.5, 256.0  # a channel range narrower or wider than this is no affine image of [0, 1] pixels

_FIX = "pass input_space=InputSpace(mean=..., std=...) (the stream's Normalize) or InputSpace(value_range=(low, high))"


def _per_channel(value: Any, name: str) -> torch.Tensor:
    """A float64 vector from a scalar or a sequence of per-channel numbers."""
    out = torch.as_tensor(value, dtype=torch.float64).flatten()
    if out.numel() == 0 or not bool(torch.isfinite(out).all()):
        raise UserError(f"InputSpace {name} must be finite numbers (one, or one per channel), got {value!r}")
    return out


class InputSpace:
    """A per-channel affine map between the solver's images and the generator's [0, 1] images.

    ``InputSpace()`` is the identity (images already in [0, 1]);
    ``InputSpace(mean=m, std=s)`` undoes torchvision's ``Normalize(m, s)`` of [0, 1] images;
    ``InputSpace(value_range=(low, high))`` maps [low, high] onto [0, 1].
    """

    def __init__(self, mean: Any = None, std: Any = None, *, value_range: Optional[Sequence[Any]] = None):
        if value_range is not None and (mean is not None or std is not None):
            raise UserError("InputSpace takes either mean and std or value_range, not both")
        if (mean is None) != (std is None):
            raise UserError("InputSpace needs both mean and std (those of the stream's Normalize)")
        if value_range is not None:
            if len(value_range) != 2:
                raise UserError(f"InputSpace value_range must be (low, high), got {value_range!r}")
            low, high = (_per_channel(v, "value_range") for v in value_range)
            low, high = torch.broadcast_tensors(low, high)
            if not bool((high > low).all()):
                raise UserError(f"InputSpace value_range needs high > low in every channel, got {value_range!r}")
            scale, shift = high - low, low
        elif mean is not None:
            mean, std = torch.broadcast_tensors(_per_channel(mean, "mean"), _per_channel(std, "std"))
            if not bool((std > 0).all()):
                raise UserError(f"InputSpace std must be > 0 in every channel, got {std.tolist()}")
            scale, shift = 1.0 / std, -mean / std  # Normalize: x = (u - mean) / std
        else:
            scale, shift = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
        self.scale = scale.clone()  # x = u * scale + shift, per channel
        self.shift = shift.clone()

    # ------------------------------------------------------------------ what it is
    @property
    def channels(self) -> int:
        """Channels the map holds numbers for (1: the same for every channel)."""
        return int(self.scale.numel())

    @property
    def low(self) -> torch.Tensor:
        """The solver-space value of a 0 pixel, per channel."""
        return self.shift.clone()

    @property
    def high(self) -> torch.Tensor:
        """The solver-space value of a 1 pixel, per channel."""
        return self.shift + self.scale

    @property
    def mean(self) -> torch.Tensor:
        """The Normalize mean this map undoes, per channel."""
        return -self.shift / self.scale

    @property
    def std(self) -> torch.Tensor:
        """The Normalize standard deviation this map undoes, per channel."""
        return 1.0 / self.scale

    @property
    def is_identity(self) -> bool:
        """Whether the solver's images already are the generator's [0, 1] images."""
        return bool(torch.allclose(self.scale, torch.ones(1, dtype=torch.float64))
                    and torch.allclose(self.shift, torch.zeros(1, dtype=torch.float64)))

    def __repr__(self) -> str:
        if self.is_identity:
            return "InputSpace()"
        fmt = lambda t: "(" + ", ".join(f"{v:.4g}" for v in t.tolist()) + ("," if t.numel() == 1 else "") + ")"
        return f"InputSpace(mean={fmt(self.mean)}, std={fmt(self.std)})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, InputSpace) and self.channels == other.channels
                and torch.allclose(self.scale, other.scale) and torch.allclose(self.shift, other.shift))

    # ------------------------------------------------------------------ the map
    def _params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and shift shaped to broadcast over x's channel axis (C x H x W or N x C x H x W)."""
        if self.channels == 1:
            return (self.scale.to(x.device, x.dtype).reshape(()), self.shift.to(x.device, x.dtype).reshape(()))
        if x.ndim < 3 or x.shape[-3] != self.channels:
            raise UserError(f"the input space has {self.channels} channels but the images have shape "
                            f"{tuple(x.shape)}; {_FIX} with one number per channel of the images")
        view = (self.channels, 1, 1)
        return self.scale.to(x.device, x.dtype).view(view), self.shift.to(x.device, x.dtype).view(view)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """The solver's images as the generator's [0, 1] images."""
        scale, shift = self._params(x)
        return x if self.is_identity else (x - shift) / scale

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """The generator's [0, 1] images as the solver sees images."""
        scale, shift = self._params(u)
        return u if self.is_identity else u * scale + shift

    def check(self, x: torch.Tensor, tolerance: float = TOLERANCE, where: str = "the stream's images") -> None:
        """Raise a UserError when images leave the range the generator was set up for (beyond `tolerance`)."""
        u = self.to_unit(x.detach())
        if not bool(torch.isfinite(u).all()):
            raise DataError(f"{where} hold NaN or infinite values; fix the data or its transforms")
        dims = [d for d in range(u.ndim) if d != u.ndim - 3] if u.ndim >= 3 else list(range(u.ndim))
        lo, hi = u.amin(dim=dims), u.amax(dim=dims)
        if bool((lo < -tolerance).any() or (hi > 1 + tolerance).any()):
            scale, shift = self._params(x)
            got_lo = (lo * scale + shift).flatten().tolist()
            got_hi = (hi * scale + shift).flatten().tolist()
            rng = lambda a, b: ", ".join(f"[{p:.3g}, {q:.3g}]" for p, q in zip(a, b))
            raise UserError(
                f"{where} reach {rng(got_lo, got_hi)} per channel, outside the range the generator was set "
                f"up for ({self!r}: {rng(self.low.tolist(), self.high.tolist())}); {_FIX} matching the "
                "stream's transform")


# ---------------------------------------------------------------------- inference
def _dataset_of(data: Any) -> Any:
    """The dataset of an Avalanche experience (any of its kinds: it holds a `dataset` and is not one), or `data`."""
    is_experience = hasattr(data, "dataset") and not hasattr(data, "__getitem__")
    return data.dataset if is_experience else data


def _group(groups: Any, name: str) -> Any:
    """One group of an Avalanche TransformGroups (None when absent or empty)."""
    if groups is None:
        return None
    try:
        return groups[name]
    except (KeyError, TypeError):
        return None


def _transform_chains(data: Any, group: str) -> list[list[Any]]:
    """Every chain of image transforms a dataset applies in `group`, in the order they run.

    Walks Avalanche's layers (each AvalancheDataset's frozen and current transform groups,
    subsets, concatenations) down to the leaf datasets (a torchvision dataset's own
    `transform`); one chain per leaf path.
    """
    # Imported here: the location of these helpers is Avalanche's, not a public promise.
    from avalanche.benchmarks.utils.transforms import flat_transforms_recursive

    def flat(t: Any) -> list[Any]:
        if t is None:
            return []
        method = getattr(t, "flat_transforms", None)
        return list(method(0)) if callable(method) else flat_transforms_recursive(t, 0)

    def walk(node: Any, depth: int) -> list[list[Any]]:
        if depth > 64:
            return [[]]
        inner = getattr(node, "_flat_data", None)
        if inner is not None and inner is not node:
            return walk(inner, depth + 1)
        own: list[Any] = []
        if hasattr(node, "_transform_groups"):
            own = flat(_group(getattr(node, "_frozen_transform_groups", None), group)) + \
                flat(_group(node._transform_groups, group))
            children = list(getattr(node, "_datasets", []))
        elif isinstance(node, Subset):
            children = [node.dataset]
        elif hasattr(node, "datasets") and isinstance(getattr(node, "datasets"), (list, tuple)):
            children = list(node.datasets)
        else:
            leaf = getattr(node, "transform", None)
            return [flat(leaf) if callable(leaf) else []]
        chains = [c for child in children for c in walk(child, depth + 1)] or [[]]
        return [c + own for c in chains]  # a child's transforms run before its parent's

    return walk(data, 0)


def _is_normalize(t: Any) -> bool:
    """Whether a transform is a torchvision Normalize (v1 or v2)."""
    return type(t).__name__ == "Normalize" and hasattr(t, "mean") and hasattr(t, "std")


def _space_of_chain(chain: list[Any]) -> InputSpace:
    """The InputSpace undoing every Normalize of one chain of transforms (composed in order)."""
    scale, shift = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    for t in chain:
        if _is_normalize(t):  # x = (prev - m) / s, with prev = u * scale + shift
            m, s = _per_channel(t.mean, "mean"), _per_channel(t.std, "std")
            scale, shift = torch.broadcast_tensors(scale / s, (shift - m) / s)
    space = InputSpace()
    space.scale, space.shift = scale.clone(), shift.clone()
    return space


def _distinct(spaces: Iterable[InputSpace]) -> list[InputSpace]:
    """The spaces with duplicates left out, in order."""
    out: list[InputSpace] = []
    for space in spaces:
        if space not in out:
            out.append(space)
    return out


def space_from_transforms(data: Any) -> Optional[InputSpace]:
    """The InputSpace undoing the torchvision Normalize in a dataset's train transforms; None without one.

    Replay joins the training mini-batches, so the train group decides; an eval group
    that normalises otherwise is logged as a warning (the solver is then tested on
    images unlike those it trained on). Several Normalize in one chain are composed;
    leaf paths that normalise differently raise a UserError.
    """
    dataset = _dataset_of(data)
    train = _distinct(_space_of_chain(c) for c in _transform_chains(dataset, "train"))
    if len(train) > 1:
        raise UserError(f"the dataset's train transforms normalise in more than one way ({train}); "
                        f"cannot tell which space to replay in: {_FIX}")
    evals = _distinct(_space_of_chain(c) for c in _transform_chains(dataset, "eval"))
    if evals and evals != train:
        logger.warning("the stream's eval transforms normalise as %s but its train transforms as %s: replay "
                       "follows the train transforms", evals, train)
    space = train[0] if train else None
    return None if space is None or space.is_identity else space


def sample_images(data: Any, n: int = SAMPLE_IMAGES, group: str = "train") -> Optional[torch.Tensor]:
    """Up to n images of a dataset (its `group` transforms), spread evenly over it; None when empty."""
    dataset = _dataset_of(data)
    if hasattr(dataset, group):  # an AvalancheDataset: the augmented (train) view the solver sees
        dataset = getattr(dataset, group)()
    size = len(dataset)
    if size == 0:
        return None
    idx = torch.linspace(0, size - 1, min(n, size)).round().long().unique().tolist()
    loader = DataLoader(Subset(dataset, idx), batch_size=SAMPLE_BATCH, shuffle=False,
                        collate_fn=getattr(dataset, "collate_fn", None))
    out = []
    # A look at the data must not change the draws of the run that follows it: the loader seeds
    # itself from the global RNG, and random augmentations draw from it too.
    with torch.random.fork_rng(devices=[]):
        for batch in loader:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            if not torch.is_tensor(x):
                raise DataError(f"the dataset yields {type(x).__name__} images, not tensors; add ToTensor() "
                                "to its transforms")
            out.append(x.float())
    return torch.cat(out)


def space_from_images(images: Optional[torch.Tensor] | Iterable[torch.Tensor]) -> InputSpace:
    """The InputSpace that maps the per-channel value range of real images onto [0, 1].

    Images in [0, 1] give the identity; any other range whose width fits an affine image
    of [0, 1] pixels (from about [-1, 1] to [0, 255]) maps its ends to 0 and 1. Raises a
    UserError when there are no images or the range fits no such map.
    """
    if images is not None and not torch.is_tensor(images):
        parts = [torch.as_tensor(x, dtype=torch.float32) for x in images]
        images = torch.cat(parts) if parts else None
    if images is None or images.numel() == 0:
        raise UserError(f"no images to work out the input space from; {_FIX}")
    x = images.detach().double()
    if x.ndim < 3:
        raise UserError(f"images must be C x H x W (or N x C x H x W), got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise DataError("the images hold NaN or infinite values; fix the data or its transforms")
    dims = [d for d in range(x.ndim) if d != x.ndim - 3]
    lo, hi = x.amin(dim=dims), x.amax(dim=dims)
    if bool((lo >= -UNIT_SLACK).all() and (hi <= 1 + UNIT_SLACK).all()):
        return InputSpace()
    width = hi - lo
    if bool((width < MIN_WIDTH).any() or (width > MAX_WIDTH).any()):
        seen = ", ".join(f"[{a:.4g}, {b:.4g}]" for a, b in zip(lo.tolist(), hi.tolist()))
        raise UserError(f"cannot tell the input space from the images: per-channel ranges {seen} fit no "
                        f"affine image of [0, 1] pixels; {_FIX}")
    return InputSpace(value_range=(lo, hi))


def infer_input_space(data: Any, n: int = SAMPLE_IMAGES) -> InputSpace:
    """The InputSpace of a dataset or experience: from its Normalize if it has one, else from its images.

    A Normalize found in the transforms is checked against the images (values outside
    its image of [0, 1] mean the data was not in [0, 1] before it). Raises a UserError
    naming the fix when it cannot tell. torch's global RNG is left as it was found.
    """
    images = sample_images(data, n)
    space = space_from_transforms(data)
    if space is not None:
        if images is not None:
            space.check(images, where="the stream's images (after its Normalize)")
        logger.info("input space from the dataset's Normalize: %r", space)
        return space
    space = space_from_images(images)
    if not space.is_identity:
        logger.info("input space from the images' value range: %r", space)
    return space


# ---------------------------------------------------------------------- a generator in the input space
class InputSpaceGenerator(Generator, nn.Module):
    """A [0, 1] generator (an ALI) seen through an InputSpace: it generates what the solver sees.

    `generate` decodes in [0, 1] and maps into the solver's space; `forward` and
    `get_features` take solver-space images. `space` may be set later (None until then).
    """

    def __init__(self, generator: nn.Module, space: Optional[InputSpace] = None):
        nn.Module.__init__(self)
        self.generator = generator
        self.space = space

    def _space(self) -> InputSpace:
        if self.space is None:
            raise UserError("the generator's input space is not known yet: train it on an experience first, "
                            f"or {_FIX}")
        return self.space

    def generate(self, batch_size: Optional[int] = None, condition: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Avalanche's generator interface: samples in the solver's input space."""
        return self._space().from_unit(self.generator.generate(batch_size, condition))

    def get_features(self, x: torch.Tensor) -> torch.Tensor:
        """Avalanche's feature interface, for solver-space images."""
        return self.generator.get_features(self._space().to_unit(x))

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        """The generator's output for solver-space images, in the solver's space."""
        space = self._space()
        return space.from_unit(self.generator(space.to_unit(x), *args))
