"""Tiny split-digits streams, small ALIs and solvers for the strategy tests."""
from __future__ import annotations

import warnings

import pytest
import torch
from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from avalanche.training.plugins import EvaluationPlugin
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from ali_replay.ali import build_ali
from ali_replay.config import ModelConfig
from strategies import StrategyContext, build_strategy

SHAPE = (1, 8, 8)
PER_CLASS = 40  # training images per class in the tiny streams: 80 per experience


@pytest.fixture(scope="session")
def digits():
    """All sklearn digits as float images in [0, 1] (N x 1 x 8 x 8) and int64 labels."""
    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return x, torch.tensor(data.target, dtype=torch.long)


@pytest.fixture(scope="session")
def digit_classifier(digits):
    """A logistic regression on real digits (the first 1400), to recognise generated ones."""
    x, y = digits
    return LogisticRegression(max_iter=2000).fit(x[:1400].flatten(1).numpy(), y[:1400].numpy())


def _subset(x, y, per_class):
    """The first `per_class` examples of each class."""
    keep = torch.cat([torch.nonzero(y == c).flatten()[:per_class] for c in range(10)])
    return x[keep], y[keep]


def make_stream(digits, task_labels=False, per_class=PER_CLASS, n_experiences=5, train_transform=None):
    """Split digits: 2 classes per experience in the order 0..9 (`train_transform` on the training images only)."""
    x, y = digits
    train = _make_taskaware_tensor_classification_dataset(*_subset(x[:1400], y[:1400], per_class))
    test = _make_taskaware_tensor_classification_dataset(*_subset(x[1400:], y[1400:], 20))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nc_benchmark(train, test, n_experiences, task_labels=task_labels, seed=0,
                            fixed_class_order=list(range(10)), train_transform=train_transform)


@pytest.fixture(scope="session")
def stream(digits):
    """Class-incremental split digits, 5 experiences of 2 classes, 80 training images each."""
    return make_stream(digits)


@pytest.fixture(scope="session")
def task_stream(digits):
    """The same split with task labels 0..4 (task-incremental)."""
    return make_stream(digits, task_labels=True)


def small_ali(conditional=False, encoder=True, latent_dim=4, hidden=32):
    """A tiny mlp ALI for 8x8 digits."""
    cfg = ModelConfig(latent_dim=latent_dim, hidden=hidden, conditional=conditional)
    return build_ali(SHAPE, cfg, num_classes=10, encoder=encoder)


def small_solver(hidden=32):
    """A tiny MLP classifier over 10 classes."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, 10))


def silent_evaluator():
    """An evaluator that computes nothing and prints nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return EvaluationPlugin(loggers=[])


@pytest.fixture
def make_ali():
    """Factory of tiny ALIs (seeded by the caller)."""
    return small_ali


@pytest.fixture
def make_solver():
    """Factory of tiny solvers."""
    return small_solver


@pytest.fixture
def evaluator():
    """Factory of silent evaluators."""
    return silent_evaluator


@pytest.fixture(scope="session")
def stream_factory(digits):
    """make_stream bound to the digits."""
    return lambda **kw: make_stream(digits, **kw)


def strategy_context(**overrides) -> StrategyContext:
    """A StrategyContext for the tiny streams: 8x8 digits, 10 classes, CPU, a silent evaluator."""
    base = dict(input_shape=SHAPE, num_classes=10, scenario="class_incremental", train_epochs=1,
                train_mb_size=20, eval_mb_size=100, lr=1e-3, device=torch.device("cpu"),
                evaluator=silent_evaluator(), generator_epochs=1)
    base.update(overrides)
    return StrategyContext(**base)


@pytest.fixture
def make_context():
    """Factory of StrategyContexts for the tiny streams (keyword overrides)."""
    return strategy_context


def make_normalised_stream(digits, per_class=PER_CLASS, mean=0.3, std=0.4):
    """Split digits (5 experiences of 2 classes) behind a Normalize, as Avalanche's SplitMNIST does."""
    from torchvision import transforms

    x, y = digits
    train = _make_taskaware_tensor_classification_dataset(*_subset(x[:1400], y[:1400], per_class))
    test = _make_taskaware_tensor_classification_dataset(x[1400:], y[1400:])
    normalize = transforms.Normalize((mean,), (std,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nc_benchmark(train, test, 5, task_labels=False, seed=0, fixed_class_order=list(range(10)),
                            train_transform=normalize, eval_transform=normalize)


@pytest.fixture(scope="session")
def normalised_stream_factory(digits):
    """make_normalised_stream bound to the digits."""
    return lambda **kw: make_normalised_stream(digits, **kw)


def _stream_accuracy(model, stream) -> float:
    """Accuracy of `model` over every experience of a test stream (eval transforms)."""
    from torch.utils.data import DataLoader

    model.eval()
    correct = total = 0
    with torch.no_grad():
        for experience in stream:
            for x, y, *_ in DataLoader(experience.dataset.eval(), batch_size=256):
                correct += int((model(x).argmax(1) == y).sum())
                total += len(y)
    return correct / total


@pytest.fixture(scope="session")
def stream_accuracy():
    """The function (model, test stream) -> accuracy over the whole stream."""
    return _stream_accuracy


def _trained(spec, solver, params, ctx, stream):
    """The strategy `spec` built at torch seed 0 (`solver()` makes its network after the seed) and trained
    on every experience of `stream`'s train stream, in order."""
    torch.manual_seed(0)
    strategy = build_strategy(spec, solver(), params, ctx)
    for experience in stream.train_stream:
        strategy.train(experience)
    return strategy


@pytest.fixture(scope="session")
def trained():
    """The function (spec, solver factory, params, context, stream) -> the strategy trained on the stream."""
    return _trained


def _fit_batch(model, x, y, steps=20, lr=1e-2) -> list[float]:
    """The cross-entropy of `model` on one batch over `steps` Adam steps on its parameters."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="session")
def fit_batch():
    """The function (model, images, labels) -> its losses over 20 Adam steps on that one batch."""
    return _fit_batch
