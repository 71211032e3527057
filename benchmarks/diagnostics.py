"""Replay diagnostics: the generator measured by a judge, experience by experience (`diagnostics: true`).

Replay is only as good as its pseudo-samples. A judge, a 2 x 400 MLP trained on every training
image of the stream (in the generator's [0, 1]), looks at what a generative strategy
(`ALIReplayPlugin`: ali_replay, dgr, gan_replay) replays while it trains each experience:

* `replay_class_share`: each old class's share of the replay set (the class it was made for,
  or the previous solver's verdict where nothing picked one);
* `judge_on_replay` (and `_by_class`): how often the judge gives a replayed image that class;
* `acceptance_by_class`: the share of the first draw the previous solver recognised (the filter);
* `reconstruction_agreement` (and `_by_class`): how often the judge gives the round trip
  G_x(G_z(x)) of the old classes' test images their label (a generator with an encoder).

They land in the run's record, `replay_diagnostics`, one entry per experience with replay.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Optional

import torch
from avalanche.core import SupervisedPlugin
from torch import nn

from ali_replay.evaluation import batched
from strategies._common import experience_tensors

log = logging.getLogger(__name__)

JUDGE_EPOCHS = 5
JUDGE_BATCH = 256


def train_judge(images: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int) -> nn.Module:
    """A 2 x 400 MLP classifier trained on real [0, 1] images, in eval mode (its own random stream)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        judge = nn.Sequential(nn.Flatten(), nn.Linear(images[0].numel(), 400), nn.ReLU(), nn.Linear(400, 400),
                              nn.ReLU(), nn.Linear(400, num_classes))
        optimizer = torch.optim.Adam(judge.parameters(), lr=1e-3)
        for _ in range(JUDGE_EPOCHS):
            for idx in torch.randperm(len(images)).split(JUDGE_BATCH):
                loss = nn.functional.cross_entropy(judge(images[idx]), labels[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return judge.eval().requires_grad_(False)


def _agreement(predicted: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict[int, float]]:
    """The share of predictions equal to the labels, in all and class by class."""
    hits = (predicted == labels).float()
    return float(hits.mean()), {int(c): float(hits[labels == c].mean()) for c in torch.unique(labels)}


class ReplayDiagnostics(SupervisedPlugin):
    """Measures an ALIReplayPlugin's replay and reconstructions with a judge; it runs after that plugin."""

    def __init__(self, judge: nn.Module, test_stream: Any):
        super().__init__()
        self.judge = judge
        self.test_stream = test_stream
        self.entries: list[dict] = []
        self.seconds = 0.0  # spent measuring, taken off the run's training seconds
        self._replay_plugin = None
        self._entry: Optional[dict] = None

    def before_training(self, strategy, *args, **kwargs):
        from strategies import ALIReplayPlugin

        self._replay_plugin = next(p for p in strategy.plugins if isinstance(p, ALIReplayPlugin))
        self.judge.to(strategy.device)

    def before_training_exp(self, strategy, *args, **kwargs):
        tic = time.perf_counter()
        self._measure_replay()
        self.seconds += time.perf_counter() - tic

    def after_training_exp(self, strategy, *args, **kwargs):
        tic = time.perf_counter()
        self._measure_reconstructions()
        self.seconds += time.perf_counter() - tic

    @torch.no_grad()
    def _measure_replay(self) -> None:
        plugin, replay = self._replay_plugin, self._replay_plugin.replay
        self._entry = None
        if replay is None or replay.images.shape[1:] != tuple(plugin.generator.shape):
            return  # nothing replayed (the first experience), or only codes (an idle generator)
        classes = replay.classes.cpu()
        counts = torch.bincount(classes)
        share = {int(c): round(float(counts[c]) / len(classes), 4) for c in torch.unique(classes)}
        verdict = batched(lambda x, _: self.judge(x.float().div(255)).argmax(1), replay.images).cpu()
        on_replay, by_class = _agreement(verdict, classes)
        self._entry = {"experience": plugin.experiences_seen, "replay_class_share": share,
                       "judge_on_replay": round(on_replay, 4),
                       "judge_on_replay_by_class": {c: round(v, 4) for c, v in by_class.items()},
                       "acceptance_by_class": {c: round(v, 4) for c, v in
                                               plugin.maker.last_acceptance_by_class.items()}}

    @torch.no_grad()
    def _measure_reconstructions(self) -> None:
        if self._entry is None:
            return
        plugin = self._replay_plugin
        old = sorted(self._entry["replay_class_share"])
        generator = plugin.generator
        if generator.has_encoder:
            images, labels = _test_images(self.test_stream, old)
            unit = plugin.space.to_unit(images)

            def round_trip(x, y):
                return generator.decode(generator.encode(x, y), y)

            verdict = batched(lambda x, y: self.judge(round_trip(x, y)).argmax(1), unit, labels).cpu()
            agreement, by_class = _agreement(verdict, labels)
            self._entry["reconstruction_agreement"] = round(agreement, 4)
            self._entry["reconstruction_agreement_by_class"] = {c: round(v, 4) for c, v in by_class.items()}
        self.entries.append(self._entry)
        log.info("replay diagnostics, experience %d: judge on replay %.3f, reconstructions %s",
                 self._entry["experience"], self._entry["judge_on_replay"],
                 self._entry.get("reconstruction_agreement", "n/a"))


def _test_images(test_stream, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images (eval transforms) and labels of the given classes."""
    xs, ys = [], []
    for experience in test_stream:
        x, y, _ = experience_tensors(experience)
        keep = torch.isin(y, torch.as_tensor(classes))
        xs.append(x[keep])
        ys.append(y[keep])
    return torch.cat(xs), torch.cat(ys)


def stream_judge(bundle, seed: int) -> nn.Module:
    """The judge of a stream: trained on all its training experiences' images, in the generator's [0, 1]."""
    from strategies.replay import StreamSpace

    space = StreamSpace()
    space.begin(bundle.benchmark.train_stream[0])
    xs, ys = [], []
    for experience in bundle.benchmark.train_stream:
        x, y, _ = experience_tensors(experience)
        xs.append(space.to_unit(x))
        ys.append(y)
    images, labels = torch.cat(xs), torch.cat(ys)
    judge = train_judge(images, labels, bundle.num_classes, seed)
    accuracy = float((batched(lambda x, _: judge(x).argmax(1), images) == labels).float().mean())
    log.info("replay diagnostics: the judge classifies %.3f of the training images", accuracy)
    return judge
