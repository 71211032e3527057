"""Issue #16's drop-in runs: Avalanche's SplitMNIST, SimpleMLP(400 x 2), 5 epochs; final accuracy and training seconds.

    python examples/measure_drop_in.py --run ali_training --transform default --data-root ../shared/data
"""
import argparse
import time

import torch
from avalanche.benchmarks.classic import SplitMNIST
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.models import SimpleMLP
from avalanche.training import GenerativeReplay, Naive
from avalanche.training.plugins import EvaluationPlugin, GenerativeReplayPlugin

from strategies import ALIReplayPlugin, ALITraining, replay_ali

RUNS = ("naive", "plugin", "ali_training", "stock_gr")

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--run", choices=RUNS, required=True)
parser.add_argument("--transform", choices=("default", "none"), default="default",
                    help="default: SplitMNIST's Normalize; none: train and eval images in [0, 1]")
parser.add_argument("--data-root", default="../shared/data")
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)

plain = {"train_transform": None, "eval_transform": None} if args.transform == "none" else {}
benchmark = SplitMNIST(n_experiences=5, seed=1234, dataset_root=args.data_root, **plain)
solver = SimpleMLP(num_classes=10, hidden_size=400, hidden_layers=2)
common = dict(model=solver, optimizer=torch.optim.Adam(solver.parameters(), lr=1e-3), train_mb_size=128,
              train_epochs=args.epochs, evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]))
if args.run == "naive":
    strategy = Naive(**common)
elif args.run == "plugin":  # the plugin given nothing but the ALI
    ali = replay_ali((1, 28, 28), num_classes=benchmark.n_classes)
    strategy = Naive(**common, plugins=[ALIReplayPlugin(ali)])
elif args.run == "ali_training":
    ali = replay_ali((1, 28, 28), conditional=False)
    generator = ALITraining(model=ali, train_mb_size=128, train_epochs=args.epochs, plugins=[GenerativeReplayPlugin()])
    strategy = GenerativeReplay(**common, generator_strategy=generator)
else:  # Avalanche's own generative replay: an MlpVAE generator
    strategy = GenerativeReplay(**common)

seconds = cpu_seconds = 0.0  # wall clock, and this process's CPU time (fair on a shared machine at one thread)
for experience in benchmark.train_stream:
    start, cpu_start = time.perf_counter(), time.process_time()
    strategy.train(experience)
    seconds += time.perf_counter() - start
    cpu_seconds += time.process_time() - cpu_start
results = strategy.eval(benchmark.test_stream)
accuracy = results["Top1_Acc_Stream/eval_phase/test_stream/Task000"]
print(f"{args.run} transform={args.transform} epochs={args.epochs} seed={args.seed} threads={args.threads}: "
      f"final accuracy {accuracy:.3f}, training {seconds:.0f} s ({cpu_seconds:.0f} s CPU)")
