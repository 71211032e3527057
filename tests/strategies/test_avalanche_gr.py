"""avalanche_gr: Avalanche's GenerativeReplay with its MlpVAE, on the project's [0, 1] streams."""
from types import SimpleNamespace

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.models.generator import MlpVAE
from avalanche.training import GenerativeReplay, Naive, VAETraining
from avalanche.training.plugins import EvaluationPlugin, GenerativeReplayPlugin

from ali_replay.errors import ConfigError
from benchmarks import build_solver, build_stream
from benchmarks.single_run import accuracy_row
from strategies.avalanche_gr import (
    MNIST_MEAN, MNIST_STD, MNISTNormalisedInput, build_avalanche_gr, from_mnist_space, replay_preview,
    to_mnist_space,
)

EPOCHS, BATCH = 10, 64  # Avalanche's GenerativeReplay on split digits in the reference setting


@pytest.fixture(scope="module")
def digits_stream():
    return build_stream({"name": "split_digits"}, None, seed=0)


def _evaluator():
    return EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])


def _train(bundle, kind, **kwargs):
    """(final average accuracy, strategy) of `kind` trained on the whole stream with seed 0."""
    torch.manual_seed(0)
    solver = build_solver("mlp", bundle.input_shape, bundle.num_classes)
    optimizer = torch.optim.Adam(solver.parameters(), lr=1e-3)
    common = dict(train_mb_size=BATCH, train_epochs=EPOCHS, eval_mb_size=256, evaluator=_evaluator())
    if kind == "naive":
        strategy = Naive(model=solver, optimizer=optimizer, **common)
    else:
        strategy = build_avalanche_gr(solver, optimizer, input_shape=bundle.input_shape, **common, **kwargs)
    for experience in bundle.benchmark.train_stream:
        strategy.train(experience, num_workers=0)
    row = accuracy_row(strategy.eval(bundle.benchmark.test_stream, num_workers=0), bundle.n_experiences, 4)
    return sum(row) / len(row), strategy


def test_is_avalanches_generative_replay_with_its_defaults(digits_stream):
    solver = build_solver("mlp", digits_stream.input_shape, 10)
    strategy = build_avalanche_gr(solver, torch.optim.Adam(solver.parameters()), input_shape=(1, 8, 8),
                                  train_mb_size=32, train_epochs=3)
    assert type(strategy) is GenerativeReplay
    generator_strategy = strategy.generator_strategy
    assert type(generator_strategy) is VAETraining
    assert generator_strategy.train_epochs == 3 and generator_strategy.train_mb_size == 32
    vae = generator_strategy.model
    assert isinstance(vae, MlpVAE) and vae.dim == 2  # GenerativeReplay's nhid
    group = generator_strategy.optimizer.param_groups[0]
    assert group["lr"] == 0.01 and group["weight_decay"] == 0.0001
    assert any(isinstance(p, GenerativeReplayPlugin) for p in generator_strategy.plugins)
    # The normalising plugin comes before the replay plugin in both strategies.
    for owner in (strategy, generator_strategy):
        kinds = [type(p) for p in owner.plugins]
        assert kinds.index(MNISTNormalisedInput) < kinds.index(GenerativeReplayPlugin)


def test_replay_and_real_data_share_one_space():
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(from_mnist_space(to_mnist_space(x)), x, atol=1e-6)
    solver = build_solver("mlp", (1, 8, 8), 10)
    normalised = build_avalanche_gr(solver, torch.optim.Adam(solver.parameters()), input_shape=(1, 8, 8),
                                    train_mb_size=8, train_epochs=1)
    with torch.no_grad():
        samples = normalised.generator_strategy.model.generate(16)
    low, high = (0 - MNIST_MEAN) / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD
    assert float(samples.min()) >= low - 1e-5 and float(samples.max()) <= high + 1e-5
    # The shipped decoder's Normalize is kept: its output is the sigmoid's, mapped like the real batches.
    z = torch.randn(16, 2)
    with torch.no_grad():
        sigmoid = normalised.generator_strategy.model.decoder.decode(z).view(-1, 1, 8, 8)
        assert torch.allclose(normalised.generator_strategy.model.decoder(z), to_mnist_space(sigmoid), atol=1e-6)
    unit = build_avalanche_gr(solver, torch.optim.Adam(solver.parameters()), input_shape=(3, 8, 8),
                              train_mb_size=8, train_epochs=1, input_space="unit")
    with torch.no_grad():
        samples = unit.generator_strategy.model.generate(16)
    assert samples.shape == (16, 3, 8, 8)  # MlpVAE takes any shape
    assert 0 <= float(samples.min()) and float(samples.max()) <= 1
    with torch.no_grad():
        sigmoid = unit.generator_strategy.model.decoder.decode(z).view(-1, 3, 8, 8)
        assert torch.equal(unit.generator_strategy.model.decoder(z), sigmoid)  # no normalisation left
    assert not any(isinstance(p, MNISTNormalisedInput) for p in unit.plugins)
    with pytest.raises(ConfigError, match="input_space"):
        build_avalanche_gr(solver, torch.optim.Adam(solver.parameters()), input_shape=(1, 8, 8), train_mb_size=8,
                           train_epochs=1, input_space="imagenet")


def test_beats_naive_on_split_digits(digits_stream):
    naive, _ = _train(digits_stream, "naive")
    replay, strategy = _train(digits_stream, "avalanche_gr")
    # Measured with seed 0: naive 0.19, avalanche_gr about 0.8.
    assert naive < 0.25
    assert replay > naive + 0.35, (replay, naive)
    images, labels = replay_preview(strategy)
    assert images.shape[1:] == (1, 8, 8) and 0 <= float(images.min()) and float(images.max()) <= 1
    # Replay while training the last experience is labelled with the classes seen before it.
    assert set(labels.tolist()) <= set(range(8)) and len(set(labels.tolist())) > 2


def test_beats_naive_on_a_stream_normalised_like_splitmnist(normalised_stream_factory):
    # Avalanche's own benchmark generator with SplitMNIST's Normalize as its transforms: fed as it is.
    stream = normalised_stream_factory(per_class=140, mean=MNIST_MEAN, std=MNIST_STD)  # the whole 1,400
    bundle = SimpleNamespace(benchmark=stream, input_shape=(1, 8, 8), num_classes=10, n_experiences=5)
    naive, _ = _train(bundle, "naive")
    replay, strategy = _train(bundle, "avalanche_gr")
    assert next(p for p in strategy.plugins if isinstance(p, MNISTNormalisedInput)).maps is False
    # Measured with seed 0: naive 0.18, avalanche_gr 0.72.
    assert replay > naive + 0.35, (replay, naive)


class _FirstBatch(SupervisedPlugin):
    """Keeps the first mini-batch the solver is given (after every other plugin's changes)."""

    def __init__(self):
        super().__init__()
        self.x = None

    def before_forward(self, strategy, *args, **kwargs):
        if self.x is None:
            self.x = strategy.mb_x.detach().clone()


def _first_batch_and_plugin(stream):
    solver = build_solver("mlp", (1, 8, 8), 10)
    spy = _FirstBatch()
    strategy = build_avalanche_gr(solver, torch.optim.Adam(solver.parameters()), input_shape=(1, 8, 8),
                                  train_mb_size=16, train_epochs=1, plugins=[spy], evaluator=_evaluator())
    strategy.train(stream.train_stream[0], num_workers=0)
    plugin = next(p for p in strategy.plugins if isinstance(p, MNISTNormalisedInput))
    return spy.x, plugin


def test_a_stream_that_normalises_itself_is_fed_as_it_is(normalised_stream_factory, digits_stream):
    # Avalanche's SplitMNIST normalises with MlpVAE's own statistics: exactly what it was shipped for.
    shipped = normalised_stream_factory(mean=MNIST_MEAN, std=MNIST_STD)
    x, plugin = _first_batch_and_plugin(shipped)
    assert plugin.maps is False
    assert float(x.min()) == pytest.approx(-MNIST_MEAN / MNIST_STD, abs=1e-4)  # normalised once, not twice
    assert float(x.max()) <= (1 - MNIST_MEAN) / MNIST_STD + 1e-4
    # A [0, 1] stream is mapped into the decoder's space, as before.
    x, plugin = _first_batch_and_plugin(digits_stream.benchmark)
    assert plugin.maps is True
    assert float(x.min()) == pytest.approx(-MNIST_MEAN / MNIST_STD, abs=1e-4)


def test_vae_replay_refuses_a_normalising_stream(normalised_stream_factory, make_context):
    from strategies import build_strategy

    stream = normalised_stream_factory()
    solver = build_solver("mlp", (1, 8, 8), 10)
    strategy = build_strategy("vae_replay", solver, None, make_context(input_shape=(1, 8, 8)))
    with pytest.raises(ConfigError, match=r"normalises its images\); use dgr"):
        strategy.train(stream.train_stream[0], num_workers=0)
