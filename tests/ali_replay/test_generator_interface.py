"""The ALI as a plain Avalanche generator, inside Avalanche's own GenerativeReplayPlugin."""
from types import SimpleNamespace

import torch
from avalanche.benchmarks import nc_benchmark
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.plugins import GenerativeReplayPlugin
from torch import nn

from ali_replay.ali import build_ali
from ali_replay.config import ModelConfig, OptimConfig
from ali_replay.data import load_dataset
from ali_replay.update import make_optimizers, train_step


class BatchSizes(SupervisedPlugin):
    """Records the size of every training mini-batch, per experience."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def before_training_exp(self, strategy, **kwargs):
        self.sizes.append([])

    def before_forward(self, strategy, **kwargs):
        self.sizes[-1].append(len(strategy.mb_x))


def test_generate_and_features_follow_avalanche_interface():
    ali = build_ali((1, 8, 8), ModelConfig(preset="mlp", hidden=32, latent_dim=6, conditional=True), num_classes=10)
    assert ali.generate(5).shape == (5, 1, 8, 8)
    assert ali.generate().shape == (1, 8, 8)
    assert ali.generate(4, condition=3).shape == (4, 1, 8, 8)
    plain = build_ali((1, 8, 8), ModelConfig(preset="mlp", hidden=32, latent_dim=6)).eval()
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(plain.get_features(x), plain.encoder(x)[0])
    assert plain.get_features(x).shape == (3, 6)


def test_ali_generator_in_avalanche_generative_replay_plugin():
    torch.manual_seed(0)
    data = load_dataset("digits")
    bench = nc_benchmark(data.train, data.test, n_experiences=2, task_labels=False, seed=0,
                         fixed_class_order=list(range(10)))
    ali = build_ali(data.shape, ModelConfig(preset="mlp", hidden=64, latent_dim=8))
    opt = make_optimizers(ali, OptimConfig())
    x = data.train.float_images()
    for _ in range(20):  # a briefly trained generator: the interface, not the quality, is tested here
        train_step(ali, opt, OptimConfig(), x[torch.randint(0, len(x), (64,))])
    ali.eval()

    solver = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    sizes = BatchSizes()
    replay = GenerativeReplayPlugin(generator_strategy=SimpleNamespace(model=ali))
    strategy = Naive(model=solver, optimizer=torch.optim.Adam(solver.parameters(), 1e-3), train_mb_size=50,
                     train_epochs=1, plugins=[replay, sizes], evaluator=None)
    for experience in bench.train_stream:
        strategy.train(experience)
    assert max(sizes.sizes[0]) == 50  # first experience: real data only
    assert max(sizes.sizes[1]) == 100  # then each batch is doubled by ALI samples labelled by the old solver
