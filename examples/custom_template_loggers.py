"""A custom SupervisedTemplate with the ALI replay plugin and Avalanche's interactive, CSV and TensorBoard loggers."""
import argparse

import torch
from avalanche.benchmarks.classic import SplitMNIST
from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
from avalanche.logging import CSVLogger, InteractiveLogger, TensorboardLogger
from avalanche.models import SimpleMLP
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate

from strategies import ALIReplayPlugin, replay_ali
from strategies.input_space import InputSpace

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--data-root", default="../shared/data", help="folder holding MNIST/raw")
parser.add_argument("--log-dir", default="runs/custom_template", help="where the CSV and TensorBoard logs go")
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--experiences", type=int, default=5, help="train on the first N experiences only")
parser.add_argument("--subset", type=int, default=None, help="images per experience (None: all)")
args = parser.parse_args()
benchmark = SplitMNIST(n_experiences=5, seed=1234, dataset_root=args.data_root)  # normalised, as it comes
solver = SimpleMLP(num_classes=10, hidden_size=400, hidden_layers=2)
loggers = [InteractiveLogger(), CSVLogger(f"{args.log_dir}/csv"), TensorboardLogger(f"{args.log_dir}/tensorboard")]
evaluator = EvaluationPlugin(accuracy_metrics(epoch=True, experience=True, stream=True),
                             loss_metrics(epoch=True, experience=True, stream=True), loggers=loggers)
ali = replay_ali((1, 28, 28), num_classes=benchmark.n_classes)
plugin = ALIReplayPlugin(ali, input_space=InputSpace(mean=(0.1307,), std=(0.3081,)))  # SplitMNIST's Normalize, given
strategy = SupervisedTemplate(model=solver, optimizer=torch.optim.Adam(solver.parameters(), lr=1e-3),
                              criterion=torch.nn.CrossEntropyLoss(), train_mb_size=128, train_epochs=args.epochs,
                              plugins=[plugin], evaluator=evaluator, eval_every=1)
train_stream = list(benchmark.train_stream)[:args.experiences]
test_stream = list(benchmark.test_stream)[:args.experiences]
if args.subset:  # a tiny run: the first images of each experience
    for experience in train_stream + test_stream:
        experience.dataset = experience.dataset.subset(range(args.subset))
for experience in train_stream:
    strategy.train(experience, eval_streams=[test_stream])  # eval_every=1: the test stream after each epoch
    strategy.eval(test_stream)  # the CSV logger's eval_results.csv records evaluations outside training
