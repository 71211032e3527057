"""Split CIFAR-10 as Avalanche serves it (SplitCIFAR10's default transforms: random crop, flip, Normalize),
Avalanche's Naive with a LatentSolver (an MLP head on the ALI's codes) and an ALIReplayPlugin: no stored
image and no stored code, only the ALI's weights and each class's mean and covariance in its latent space.

    python examples/split_cifar10_latent_solver.py --data-root DIR

DIR holds torchvision's cifar-10-batches-py/ (SplitCIFAR10 itself reads it), or cifar10.npz (the project's
offline copy, served through the same transforms and the same class order as SplitCIFAR10 with seed 1234).
"""
import argparse
from pathlib import Path

import torch
from avalanche.benchmarks.classic import SplitCIFAR10
from avalanche.benchmarks.classic.ccifar10 import _default_cifar10_eval_transform, _default_cifar10_train_transform
from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.logging import InteractiveLogger
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from PIL import Image

from ali_replay import ModelConfig, build_ali
from ali_replay.data import load_dataset
from strategies import ALIReplayPlugin, LatentSolver, code_head

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data-root", default="../shared/data", help="folder with cifar-10-batches-py/ or cifar10.npz")
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--experiences", type=int, default=5, help="train on the first N experiences only")
parser.add_argument("--subset", type=int, default=None, help="images per experience (None: all)")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
torch.manual_seed(args.seed)


class NpzImages(torch.utils.data.Dataset):
    """One split of cifar10.npz as torchvision's CIFAR10 serves it: (PIL image, label), and `targets`."""

    def __init__(self, split):
        self.images, self.targets = split.images, split.targets.tolist()

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return Image.fromarray(self.images[i].permute(1, 2, 0).numpy()), self.targets[i]


root = Path(args.data_root)
if (root / "cifar-10-batches-py").is_dir():
    benchmark = SplitCIFAR10(n_experiences=5, seed=1234, dataset_root=root)
else:  # the offline copy, built as SplitCIFAR10 builds its benchmark
    splits = load_dataset("cifar10", root=root)
    benchmark = nc_benchmark(NpzImages(splits.train), NpzImages(splits.test), n_experiences=5, task_labels=False,
                             seed=1234, train_transform=_default_cifar10_train_transform,
                             eval_transform=_default_cifar10_eval_transform)

# ali_replay@features (configs/strategy/ali_replay.yaml): an unconditional ALI with a 64-d latent space;
# the head reads the encoder's codes, and replay feeds it draws from each old class's Gaussian there.
ali = build_ali((3, 32, 32), ModelConfig(conditional=False, latent_dim=64, hidden=128, width=0.5))
model = LatentSolver(ali, code_head(ali.latent_dim, benchmark.n_classes, 400))  # its parameters are the head's
# The encoder is frozen after the first experience, so every class's statistics are taken in the space the
# head reads; from then on the head needs nothing decoded, and train_after_freeze=False idles the generator.
# The head learns the current classes from codes of augmented images and the old ones from Gaussians:
# head_refit_steps=2000 then gives it steps on class-balanced draws of every class's Gaussian, the
# current ones included, after each experience.
plugin = ALIReplayPlugin(ali, source="class_latent", labels="stored", freeze_encoder_after=1, train_after_freeze=False,
                         head_refit_steps=2000, filter_replay=False, ali_epochs=args.epochs, ali_batch_size=None,
                         ali_replay_batch_size=None)
strategy = Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), train_mb_size=128,
                 train_epochs=args.epochs, eval_mb_size=512, plugins=[plugin],
                 evaluator=EvaluationPlugin(accuracy_metrics(stream=True, experience=True),
                                            loggers=[InteractiveLogger()]))

train_stream = list(benchmark.train_stream)[:args.experiences]
test_stream = list(benchmark.test_stream)[:args.experiences]
if args.subset:  # a tiny run: random images of each experience (its classes come one after the other)
    for experience in train_stream + test_stream:
        picked = torch.randperm(len(experience.dataset), generator=torch.Generator().manual_seed(args.seed))
        experience.dataset = experience.dataset.subset(picked[:args.subset].tolist())
for experience in train_stream:
    strategy.train(experience)
    strategy.eval(test_stream)
