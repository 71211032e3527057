"""Does the solver tell replayed images from real ones? A probe on the first two experiences of a stream.

Generative replay teaches the solver the old classes from generated images only. If generated
images differ from real ones in a way the solver can read (blur, texture statistics), it can
learn "generated means old class" instead of the old classes themselves. After the second
experience this probe compares the solver's accuracy on the old classes' replay (what it was
trained on), on round trips G_x(G_z(x)) of their real test images, and on those real test
images, with the share of each that it gives to the new classes.

    python -m benchmarks.shortcut_probe --benchmark split_cifar10_gray --data-root ../shared/data

The plugin is the README's drop-in, `ALIReplayPlugin(replay_ali(shape, num_classes))` (the
default recipe), on a `Naive` strategy with the benchmark's 2 x 400 MLP.
"""
from __future__ import annotations

import argparse
import json

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import LwFPlugin
from avalanche.training.supervised import Naive
from omegaconf import OmegaConf

from ali_replay.evaluation import batched, predict
from benchmarks.solvers import build_solver
from benchmarks.streams import build_stream
from strategies import ALIReplayPlugin, ReconstructionSolver, replay_ali
from strategies._common import experience_tensors
from strategies.replay.replay_set import as_float_images


class _KeepReplay(SupervisedPlugin):
    """Keeps the replay set an ALIReplayPlugin made for the latest experience (it runs after that plugin)."""

    def __init__(self, plugin: ALIReplayPlugin):
        super().__init__()
        self.plugin, self.replay = plugin, None

    def before_training_exp(self, strategy, *args, **kwargs):
        self.replay = self.plugin.replay


def _scores(predicted: torch.Tensor, labels: torch.Tensor, new_classes: list[int]) -> dict[str, float]:
    return {"accuracy": round(float((predicted == labels).float().mean()), 4),
            "to_new_classes": round(float(torch.isin(predicted, torch.as_tensor(new_classes)).float().mean()), 4)}


def probe(benchmark: str, data_root: str, epochs: int, seed: int, round_trip_weight: float = 0.0,
          solver_input: str = "image", lwf_alpha: float = 0.0) -> dict:
    torch.manual_seed(seed)
    bundle = build_stream(OmegaConf.create({"name": benchmark, "scenario": "class_incremental",
                                            "shuffle_classes": False}),
                          OmegaConf.create({"root": data_root, "download": False, "path": None}), seed=seed)
    stream = bundle.benchmark
    shape = tuple(experience_tensors(stream.train_stream[0])[0].shape[1:])  # reads the experience: it draws from torch's random stream, so the figures depend on it
    solver = build_solver("mlp", shape, bundle.num_classes)
    ali = replay_ali(shape, num_classes=bundle.num_classes, conditional=solver_input == "image")
    if solver_input == "reconstruction":  # every image through the ALI's round trip, real ones included
        solver = ReconstructionSolver(ali, solver)
    plugin = ALIReplayPlugin(ali, seed=seed, round_trip_weight=round_trip_weight)
    strategy = Naive(model=solver, optimizer=torch.optim.Adam(solver.parameters(), lr=1e-3), train_mb_size=128,
                     train_epochs=epochs, eval_mb_size=512, plugins=[plugin, keep := _KeepReplay(plugin)]
                     + ([LwFPlugin(alpha=lwf_alpha, temperature=2)] if lwf_alpha else []), evaluator=None)
    for experience in stream.train_stream[:2]:
        strategy.train(experience)
    solver.eval()
    old = sorted(int(c) for c in stream.train_stream[0].classes_in_this_experience)
    new = sorted(int(c) for c in stream.train_stream[1].classes_in_this_experience)

    x, y, _ = experience_tensors(stream.test_stream[0])
    generator, space = plugin.generator, plugin.space
    with torch.no_grad():
        unit = space.to_unit(x)
        trips = batched(lambda u, c: generator.decode(generator.encode(u, c), c), unit, y)
        replay = keep.replay
        replayed = space.from_unit(as_float_images(replay.images))
        result = {"benchmark": benchmark, "seed": seed, "solver_epochs": epochs,
                  "round_trip_weight": round_trip_weight, "solver_input": solver_input,
                  "lwf_alpha": lwf_alpha, "old_classes": old,
                  "new_classes": new,
                  "replay": _scores(predict(solver, replayed).cpu(), replay.classes.cpu(), new),
                  "round_trips": _scores(predict(solver, space.from_unit(trips)).cpu(), y, new),
                  "real_test_images": _scores(predict(solver, x).cpu(), y, new)}
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="split_cifar10_gray")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--epochs", type=int, default=10, help="solver epochs per experience")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--round-trip-weight", type=float, default=0.0,
                        help="the plugin's round_trip_weight (0: the default recipe)")
    parser.add_argument("--solver-input", choices=("image", "reconstruction"), default="image",
                        help="reconstruction: an unconditional ALI, the solver fed every image through its round trip")
    parser.add_argument("--lwf-alpha", type=float, default=0.0,
                        help="add Avalanche's LwFPlugin at this alpha (temperature 2): the previous solver's scores "
                             "on the real images kept (0: none)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the figures in BENCHMARKS.md: 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(json.dumps(probe(args.benchmark, args.data_root, args.epochs, args.seed, args.round_trip_weight,
                           args.solver_input, args.lwf_alpha), indent=2))


if __name__ == "__main__":
    main()
