"""InputSpace: the map between a stream's images and the generator's [0, 1], given or worked out from the data."""
import logging
import warnings

import pytest
import torch
from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from torchvision import transforms

from ali_replay.errors import UserError
from strategies.input_space import (InputSpace, InputSpaceGenerator, infer_input_space, sample_images,
                                    space_from_images, space_from_transforms)

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def _pixels(n, channels=3, side=32, seed=0):
    """Random 8-bit images as floats in [0, 1], every channel holding 0 and 1 somewhere."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, channels, side, side), generator=g).float() / 255
    x[0, :, 0, 0], x[0, :, 0, 1] = 0.0, 1.0
    return x


def _stream(x, train_transform=None, eval_transform=None):
    """A 2-experience class-incremental stream over x (4 classes), with SplitCIFAR10-style transforms."""
    y = torch.arange(len(x)) % 4
    train = _make_taskaware_tensor_classification_dataset(x, y)
    test = _make_taskaware_tensor_classification_dataset(x[:8], y[:8])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nc_benchmark(train, test, 2, task_labels=False, seed=0, fixed_class_order=[0, 1, 2, 3],
                            train_transform=train_transform, eval_transform=eval_transform)


def _cifar_transforms():
    """SplitCIFAR10's default train and eval transforms, for tensor images (no ToTensor)."""
    normalize = transforms.Normalize(CIFAR_MEAN, CIFAR_STD)
    train = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), normalize])
    return train, transforms.Compose([normalize])


def test_mean_std_round_trip_and_range():
    space = InputSpace(mean=CIFAR_MEAN, std=CIFAR_STD)
    u = _pixels(4)
    x = space.from_unit(u)
    assert torch.allclose(x, transforms.Normalize(CIFAR_MEAN, CIFAR_STD)(u), atol=1e-5)
    assert torch.allclose(space.to_unit(x), u, atol=1e-5)
    assert torch.allclose(space.low, -torch.tensor(CIFAR_MEAN, dtype=torch.float64) / torch.tensor(CIFAR_STD))
    assert torch.allclose(space.mean.float(), torch.tensor(CIFAR_MEAN)) and space.channels == 3
    assert torch.allclose(space.to_unit(x[0]), u[0], atol=1e-5)  # one C x H x W image too


def test_value_range_and_identity():
    space = InputSpace(value_range=(-1.0, 1.0))
    u = torch.rand(5, 1, 8, 8)
    assert torch.allclose(space.from_unit(u), 2 * u - 1)
    assert torch.allclose(space.to_unit(2 * u - 1), u, atol=1e-6)
    assert InputSpace().is_identity and InputSpace().to_unit(u) is u
    assert InputSpace(mean=0.5, std=0.5) == space  # Normalize(0.5, 0.5) is the same map
    with pytest.raises(UserError, match="high > low"):
        InputSpace(value_range=(1.0, 0.0))
    with pytest.raises(UserError, match="both mean and std"):
        InputSpace(mean=0.5)
    with pytest.raises(UserError, match="std must be > 0"):
        InputSpace(mean=0.5, std=0.0)


def test_check_flags_images_outside_the_generators_range():
    space = InputSpace(mean=MNIST_MEAN, std=MNIST_STD)
    u = torch.rand(4, 1, 8, 8)
    space.check(space.from_unit(u))
    with pytest.raises(UserError, match=r"outside the range the generator was set up for.*InputSpace\(mean="):
        space.check(u * 255)  # raw 0..255 pixels fed to a space built for normalised [0, 1] images
    with pytest.raises(UserError, match="3 channels"):
        InputSpace(mean=CIFAR_MEAN, std=CIFAR_STD).to_unit(u)


def test_split_mnist_default_transform_recovers_mnist_normalize(shared_data):
    from avalanche.benchmarks.classic import SplitMNIST
    benchmark = SplitMNIST(n_experiences=5, seed=1234, dataset_root=str(shared_data))
    experience = benchmark.train_stream[0]
    space = infer_input_space(experience)
    assert torch.allclose(space.mean, torch.tensor([MNIST_MEAN], dtype=torch.float64))
    assert torch.allclose(space.std, torch.tensor([MNIST_STD], dtype=torch.float64))
    u = space.to_unit(sample_images(experience, 512))
    # MNIST's pixels span 0..255: back in [0, 1] the images reach both ends.
    assert abs(float(u.min())) < 1e-5 and abs(float(u.max()) - 1) < 1e-5
    assert torch.allclose(space.from_unit(u), sample_images(experience, 512), atol=1e-5)


def test_split_mnist_without_transform_is_the_identity(shared_data, caplog):
    from avalanche.benchmarks.classic import SplitMNIST
    plain = SplitMNIST(n_experiences=5, seed=1234, dataset_root=str(shared_data),
                       train_transform=None, eval_transform=None)
    assert space_from_transforms(plain.train_stream[0]) is None
    assert infer_input_space(plain.train_stream[0]).is_identity
    # train_transform=None alone keeps SplitMNIST's normalising eval transform: replay follows training.
    mixed = SplitMNIST(n_experiences=5, seed=1234, dataset_root=str(shared_data), train_transform=None)
    with caplog.at_level(logging.WARNING, logger="strategies.input_space"):
        assert infer_input_space(mixed.train_stream[0]).is_identity
    assert "eval transforms normalise" in caplog.text


def test_cifar_style_normalise_crop_flip_on_generated_data():
    train_t, eval_t = _cifar_transforms()
    stream = _stream(_pixels(64), train_t, eval_t)
    experience = stream.train_stream[1]
    space = infer_input_space(experience)
    assert torch.allclose(space.mean.float(), torch.tensor(CIFAR_MEAN), atol=1e-6)
    assert torch.allclose(space.std.float(), torch.tensor(CIFAR_STD), atol=1e-6)
    seen = sample_images(experience)  # augmented: zero padding lands on each channel's low end
    u = space.to_unit(seen)
    assert float(u.min()) > -1e-5 and float(u.max()) < 1 + 1e-5
    assert torch.allclose(u.amin(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(space.from_unit(u), seen, atol=1e-5)
    space.check(seen)


def test_looking_at_augmented_data_leaves_the_global_rng_alone():
    train_t, eval_t = _cifar_transforms()  # random crops and flips draw from torch's global RNG
    experience = _stream(_pixels(64), train_t, eval_t).train_stream[1]
    torch.manual_seed(0)
    state = torch.get_rng_state()
    infer_input_space(experience)
    assert torch.equal(torch.get_rng_state(), state)


def test_range_inference_when_no_normalize_is_visible():
    # The same normalisation hidden in a Lambda: worked out from the images' range instead.
    normalize = transforms.Normalize(CIFAR_MEAN, CIFAR_STD)
    hidden = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                 transforms.Lambda(lambda x: normalize(x))])
    experience = _stream(_pixels(64), hidden).train_stream[0]
    assert space_from_transforms(experience) is None
    space = infer_input_space(experience)
    assert torch.allclose(space.mean.float(), torch.tensor(CIFAR_MEAN), atol=1e-4)
    assert torch.allclose(space.std.float(), torch.tensor(CIFAR_STD), atol=1e-4)
    # Images already in [0, 1] (no transform): the identity.
    assert infer_input_space(_stream(_pixels(64)).train_stream[0]).is_identity


def test_cannot_tell_raises_with_the_fix():
    with pytest.raises(UserError, match=r"no images.*InputSpace\(mean="):
        space_from_images(torch.empty(0, 1, 8, 8))
    wide = torch.randn(16, 1, 8, 8) * 1000  # no image of [0, 1] pixels spans thousands
    with pytest.raises(UserError, match=r"cannot tell the input space.*InputSpace\(mean="):
        space_from_images(wide)
    # A Normalize of data that was never in [0, 1] (raw 0..255 pixels): its image does not hold them.
    raw = _stream(_pixels(32) * 255, transforms.Normalize((0.5,), (0.5,))).train_stream[0]
    with pytest.raises(UserError, match="outside the range"):
        infer_input_space(raw)


def test_input_space_generator_generates_in_the_solvers_space(make_ali):
    torch.manual_seed(0)
    ali = make_ali()
    space = InputSpace(mean=MNIST_MEAN, std=MNIST_STD)
    generator = InputSpaceGenerator(ali, space)
    torch.manual_seed(1)
    out = generator.generate(6)
    torch.manual_seed(1)
    assert torch.allclose(out, space.from_unit(ali.generate(6)))
    assert out.min() >= float(space.low) - 1e-5 and out.max() <= float(space.high) + 1e-5
    with pytest.raises(UserError, match="not known yet"):
        InputSpaceGenerator(ali).generate(2)
