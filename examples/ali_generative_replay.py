"""ALIGenerativeReplay, the ready strategy: Avalanche's SplitMNIST and SimpleMLP with an ALI generator."""
import argparse

import torch
from avalanche.benchmarks.classic import SplitMNIST
from avalanche.models import SimpleMLP

from strategies import ALIGenerativeReplay, replay_ali

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--data-root", default="../shared/data", help="folder holding MNIST/raw")
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--experiences", type=int, default=5, help="train on the first N experiences only")
parser.add_argument("--subset", type=int, default=None, help="images per experience (None: all)")
args = parser.parse_args()

# SplitMNIST's default transform normalises: the plugin finds its Normalize and replays normalised images.
benchmark = SplitMNIST(n_experiences=5, seed=1234, dataset_root=args.data_root)
solver = SimpleMLP(num_classes=10, hidden_size=400, hidden_layers=2)
ali = replay_ali((1, 28, 28), num_classes=benchmark.n_classes)
strategy = ALIGenerativeReplay(model=solver, optimizer=torch.optim.Adam(solver.parameters(), lr=1e-3), ali=ali,
                               train_mb_size=128, train_epochs=args.epochs)

train_stream = list(benchmark.train_stream)[:args.experiences]
test_stream = list(benchmark.test_stream)[:args.experiences]
if args.subset:  # a tiny run: the first images of each experience
    for experience in train_stream + test_stream:
        experience.dataset = experience.dataset.subset(range(args.subset))
for experience in train_stream:
    strategy.train(experience)
    strategy.eval(test_stream)
