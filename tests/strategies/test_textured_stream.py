"""ALI replay on 28 x 28 data that is not digits: CIFAR-10 in grayscale (`cifar10_gray`), at a tiny size."""
import warnings

import pytest
import torch
from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from avalanche.training import Naive
from torch.utils.data import DataLoader

from ali_replay.data import load_dataset
from strategies.ali_replay_plugin import ALIReplayPlugin
from strategies.generative_replay import replay_ali

CLASSES = [0, 1, 6, 7]  # airplane, automobile, then frog, horse: two experiences of two classes


@pytest.fixture(scope="module")
def gray_stream(shared_data):
    """Two experiences of grayscale CIFAR-10 at 28 x 28, 150 training and 200 test images per class."""
    gray = load_dataset("cifar10_gray", root=shared_data)
    assert gray.shape == (1, 28, 28)

    def first(split, per_class):
        keep = torch.cat([torch.nonzero(split.targets == c).flatten()[:per_class] for c in CLASSES])
        return split.images[keep].float() / 255, split.targets[keep]

    train = _make_taskaware_tensor_classification_dataset(*first(gray.train, 150))
    test = _make_taskaware_tensor_classification_dataset(*first(gray.test, 200))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nc_benchmark(train, test, 2, task_labels=False, seed=0, fixed_class_order=CLASSES)


def accuracy_on(model, stream, classes):
    """Accuracy of `model` on the test images of `classes` (argmax over its ten outputs)."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for experience in stream.test_stream:
            for x, y, *_ in DataLoader(experience.dataset.eval(), batch_size=500):
                keep = torch.isin(y, torch.as_tensor(classes))
                correct += int((model(x[keep]).argmax(1) == y[keep]).sum())
                total += int(keep.sum())
    return correct / total


def train(stream, plugins):
    """A 784-200-10 MLP trained by Avalanche's Naive (5 epochs per experience) with the given plugins."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 200), torch.nn.ReLU(),
                                torch.nn.Linear(200, 10))
    strategy = Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), 1e-3), train_mb_size=64,
                     train_epochs=5, eval_mb_size=500, plugins=plugins, evaluator=None)
    for experience in stream.train_stream:
        strategy.train(experience)
    return model


def test_ali_replay_keeps_the_oldest_textured_classes_better_than_no_replay(gray_stream):
    """The README's drop-in (default recipe, fewer passes): old classes held well above no replay's zero."""
    torch.manual_seed(0)
    forgot = train(gray_stream, [])
    torch.manual_seed(0)
    plugin = ALIReplayPlugin(replay_ali((1, 28, 28), num_classes=10), ali_epochs=5, replay_size=2000)
    replayed = train(gray_stream, [plugin])
    old = CLASSES[:2]
    acc_naive, acc_replay = accuracy_on(forgot, gray_stream, old), accuracy_on(replayed, gray_stream, old)
    assert acc_naive < 0.1  # fine-tuning on frogs and horses forgets airplanes and cars
    assert acc_replay > 0.3, (acc_replay, acc_naive)  # chance among the four classes is 0.25
    assert plugin.experiences_seen == 2
