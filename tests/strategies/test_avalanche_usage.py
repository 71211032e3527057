"""ALIReplayPlugin used as Avalanche users use it: growing heads, multi-head models, periodic eval, epochs."""
import warnings

import torch
from avalanche.core import SupervisedPlugin
from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from avalanche.models import IncrementalClassifier, MultiHeadClassifier, MultiTaskModule
from avalanche.training import Naive
from torch.utils.data import DataLoader

from strategies.ali_replay_plugin import ALIReplayPlugin

# one generator step per solver iteration (no extra passes, no filtering), so that steps can be counted
REPLAY = dict(source="conditional", replay_size=200, filter_replay=False, ali_epochs=None, ali_batch_size=None,
              ali_replay_batch_size=None)


class IncrementalMLP(torch.nn.Module):
    """A tiny MLP whose head is Avalanche's IncrementalClassifier (it grows with the classes seen)."""

    def __init__(self, hidden=32):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU())
        self.classifier = IncrementalClassifier(hidden, initial_out_features=2)

    def forward(self, x):
        return self.classifier(self.features(x))


class MultiHeadMLP(MultiTaskModule):
    """A tiny MLP with Avalanche's MultiHeadClassifier: one head per task label."""

    def __init__(self, hidden=32):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU())
        self.classifier = MultiHeadClassifier(hidden)

    def forward_single_task(self, x, task_label):
        return self.classifier(self.features(x), task_label)


class Probe(SupervisedPlugin):
    """Placed after the ALI plugin: per experience and epoch, the replay set the plugin drew (or None)."""

    def __init__(self, plugin):
        super().__init__()
        self.plugin = plugin
        self.replays = []  # (experience id, epoch, replay set or None)

    def before_training_epoch(self, strategy, **kwargs):
        self.replays.append((strategy.experience.current_experience, strategy.clock.train_exp_epochs,
                             self.plugin.replay))


def count_generator_steps(plugin):
    """Wrap the generator's step so that its calls are counted in the returned list's length."""
    calls = []
    step = plugin.generator.step

    def counted(*args, **kwargs):
        calls.append(len(args[0]))
        return step(*args, **kwargs)

    plugin.generator.step = counted
    return calls


def naive(model, plugins=(), epochs=3, evaluator=None, mb=10, lr=5e-3, **kwargs):
    """Avalanche's Naive over `model` with Adam (24 updates per experience at the defaults)."""
    return Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), lr), train_mb_size=mb,
                 train_epochs=epochs, eval_mb_size=100, plugins=list(plugins), evaluator=evaluator, **kwargs)


def accuracy_on(model, test_stream, classes):
    """Accuracy of `model` on the test examples of `classes` (argmax over all its outputs)."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for experience in test_stream:
            for x, y, *_ in DataLoader(experience.dataset.eval(), batch_size=256):
                keep = torch.isin(y, torch.as_tensor(classes))
                if keep.any():
                    correct += int((model(x[keep]).argmax(1) == y[keep]).sum())
                    total += int(keep.sum())
    return correct / total


def train_incremental(stream, plugin_factory, experiences=3, seed=0):
    """An IncrementalMLP trained by Naive (plus the plugin and a probe, if any) on the first experiences,
    10 epochs each; returns (model, plugin, probe)."""
    torch.manual_seed(seed)
    model = IncrementalMLP()
    plugin = plugin_factory() if plugin_factory else None
    probe = Probe(plugin) if plugin else None
    strategy = naive(model, [plugin, probe] if plugin else [], epochs=10)
    for experience in stream.train_stream[:experiences]:
        strategy.train(experience)
    return model, plugin, probe


def test_incremental_classifier_head_grows_and_replay_keeps_old_classes(stream, make_ali):
    """Distillation over a head that grew: replay beats Naive on the old classes, above chance."""
    torch.manual_seed(0)
    ali = make_ali(conditional=True)
    replayed, plugin, probe = train_incremental(stream, lambda: ALIReplayPlugin(ali, **REPLAY))
    forgot, *_ = train_incremental(stream, None)
    assert replayed.classifier.classifier.out_features == 6  # grew 2 -> 4 -> 6 with the classes
    assert plugin.experiences_seen == 3
    # The teacher is the solver as it left the previous experience, before Avalanche grew its head:
    # its logits span the classes it had (the untrained new units would distil false scores).
    widths = {exp: replay.targets.shape[1] for exp, _, replay in probe.replays if replay is not None}
    assert widths == {1: 2, 2: 4}
    old = [0, 1, 2, 3]
    acc_replay = accuracy_on(replayed, stream.test_stream, old)
    acc_naive = accuracy_on(forgot, stream.test_stream, old)
    assert acc_replay > 0.25  # well above chance (1/6 over the six classes the head knows)
    assert acc_replay > acc_naive + 0.2, (acc_replay, acc_naive)


def test_multi_head_model_replays_each_example_with_its_task(task_stream, make_ali):
    """On the task-incremental stream each replayed example carries the task its class came with."""
    torch.manual_seed(0)
    plugin = ALIReplayPlugin(make_ali(conditional=True), **REPLAY)
    probe = Probe(plugin)
    model = MultiHeadMLP()
    strategy = naive(model, [plugin, probe], epochs=1)
    for experience in task_stream.train_stream[:3]:
        strategy.train(experience)
    replays = {exp: replay for exp, _, replay in probe.replays}
    assert replays[0] is None
    for exp in (1, 2):
        replay = replays[exp]
        assert set(replay.tasks.tolist()) == set(range(exp))  # every older task, no current one
        assert torch.equal(replay.tasks, replay.classes // 2)  # task t holds classes 2t and 2t+1
    assert plugin.experiences_seen == 3
    # each task's head answers its own test examples well above a coin flip
    model.eval()
    for exp in task_stream.test_stream[:3]:
        x, y, t = next(iter(DataLoader(exp.dataset.eval(), batch_size=1000)))
        with torch.no_grad():
            acc = float((model(x, t).argmax(1) == y).float().mean())
        assert acc > 0.6, (exp.current_experience, acc)


def relabelled_task_stream(digits, per_class=40):
    """Split digits with task labels 0..4 and the classes of every task renumbered 0 and 1."""
    x, y = digits
    keep = torch.cat([torch.nonzero(y[:1400] == c).flatten()[:per_class] for c in range(10)])
    train = _make_taskaware_tensor_classification_dataset(x[keep], y[keep])
    test = _make_taskaware_tensor_classification_dataset(x[1400:], y[1400:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nc_benchmark(train, test, 5, task_labels=True, seed=0, fixed_class_order=list(range(10)),
                            class_ids_from_zero_in_each_exp=True)


def test_classes_renumbered_per_task_stay_apart(digits, make_ali):
    """Class 0 of task 0 and class 0 of task 1 are different groups: replay keeps each with its task."""
    stream = relabelled_task_stream(digits)
    torch.manual_seed(0)
    plugin = ALIReplayPlugin(make_ali(conditional=True), **REPLAY)
    probe = Probe(plugin)
    strategy = naive(MultiHeadMLP(), [plugin, probe], epochs=1)
    for experience in stream.train_stream[:3]:
        assert sorted(experience.classes_in_this_experience) == [0, 1]
        strategy.train(experience)
    assert plugin.groups == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    assert plugin.experiences_seen == 3
    replay = probe.replays[-1][2]  # experience 2: tasks 0 and 1 are old, both with classes 0 and 1
    pairs = set(zip(replay.classes.tolist(), replay.tasks.tolist()))
    assert pairs == {(0, 0), (1, 0), (0, 1), (1, 1)}


def run_with_eval(stream, make_ali, periodic, seed=0):
    """Naive + plugin over 3 experiences, optionally evaluating inside training and between experiences."""
    torch.manual_seed(seed)
    plugin = ALIReplayPlugin(make_ali(conditional=True), **REPLAY)
    steps = count_generator_steps(plugin)
    probe = Probe(plugin)
    model = IncrementalMLP()
    strategy = naive(model, [plugin, probe], eval_every=1 if periodic else -1)
    for experience in stream.train_stream[:3]:
        if periodic:
            strategy.train(experience, eval_streams=[stream.test_stream])
            strategy.eval(stream.test_stream)
        else:
            strategy.train(experience)
    return model, plugin, steps, probe


def test_evaluation_inside_and_between_experiences_does_not_disturb_replay(stream, make_ali, stream_accuracy):
    """eval_every=1 and strategy.eval between experiences: same replay, same generator steps, same accuracy."""
    plain_model, plain, plain_steps, plain_probe = run_with_eval(stream, make_ali, periodic=False)
    eval_model, evald, eval_steps, eval_probe = run_with_eval(stream, make_ali, periodic=True)
    assert eval_steps == plain_steps  # the generator stepped only on training mini-batches
    assert [len(r) if r is not None else 0 for *_, r in eval_probe.replays] == \
           [len(r) if r is not None else 0 for *_, r in plain_probe.replays]
    assert sum(r is not None for *_, r in eval_probe.replays) == 6  # experiences 1 and 2, three epochs each
    assert evald.experiences_seen == plain.experiences_seen == 3
    assert evald.groups == plain.groups
    plain_acc = stream_accuracy(plain_model, stream.test_stream[:3])
    eval_acc = stream_accuracy(eval_model, stream.test_stream[:3])
    assert abs(plain_acc - eval_acc) <= 0.05, (plain_acc, eval_acc)


def test_epochs_and_repeated_experience_count_distinct_experiences(stream, make_ali):
    """train_epochs=2; experience 0 trained twice is one experience, and never its own replay."""
    torch.manual_seed(0)
    plugin = ALIReplayPlugin(make_ali(conditional=True), **REPLAY)
    steps = count_generator_steps(plugin)
    probe = Probe(plugin)
    strategy = naive(IncrementalMLP(), [plugin, probe], epochs=2, mb=20)
    first, second = stream.train_stream[0], stream.train_stream[1]
    strategy.train(first)
    assert len(steps) == 2 * 4  # 80 images in mini-batches of 20, two epochs: the generator steps each time
    strategy.train(first)
    assert plugin.experiences_seen == 1
    assert all(replay is None for *_, replay in probe.replays)  # nothing old to replay yet
    strategy.train(second)
    assert plugin.experiences_seen == 2
    replay = probe.replays[-1][2]
    assert set(replay.classes.tolist()) == {0, 1}
    assert probe.replays[-1][2] is probe.replays[-2][2]  # one replay set per experience, drawn before its epochs
    strategy.train(first)  # back to experience 0: only experience 1's classes are old
    assert plugin.experiences_seen == 2
    assert set(probe.replays[-1][2].classes.tolist()) == {2, 3}


def test_normalised_stream_with_incremental_classifier(normalised_stream_factory, make_ali):
    """A Normalize'd stream and a growing head: the plugin finds the normalisation and still beats Naive."""
    stream = normalised_stream_factory()
    torch.manual_seed(0)
    ali = make_ali(conditional=True)
    replayed, plugin, _ = train_incremental(stream, lambda: ALIReplayPlugin(ali, **REPLAY))
    forgot, *_ = train_incremental(stream, None)
    assert not plugin.input_space.is_identity
    unit = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)
    assert torch.allclose(plugin.input_space.from_unit(unit).flatten(), torch.tensor([-0.75, 1.75]), atol=1e-5)
    old = [0, 1, 2, 3]
    acc_replay = accuracy_on(replayed, stream.test_stream, old)
    acc_naive = accuracy_on(forgot, stream.test_stream, old)
    assert acc_replay > 0.25 and acc_replay > acc_naive + 0.2, (acc_replay, acc_naive)
