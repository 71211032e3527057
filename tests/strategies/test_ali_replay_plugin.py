"""ALIReplayPlugin inside Avalanche's Naive on tiny split-digits streams."""
import copy

import pytest
import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive

from ali_replay.errors import ConfigError
from strategies._common import experience_tensors
from strategies.memory import module_nbytes
from strategies.ali_replay_plugin import ALIReplayPlugin
from strategies.replay import LABEL_MODES, SOURCES, as_float_images, distillation_loss


class Recorder(SupervisedPlugin):
    """Placed after the ALI plugin: keeps each experience's replay set and checks the loss by hand."""

    def __init__(self, plugin):
        super().__init__()
        self.plugin = plugin
        self.replays = []
        self.batch_sizes = []
        self.checks = []

    def before_training_epoch(self, strategy, **kwargs):
        if strategy.clock.train_exp_epochs == 0:
            self.replays.append(self.plugin.replay)

    def before_forward(self, strategy, **kwargs):
        self.batch_sizes.append(len(strategy.mb_x))

    def before_backward(self, strategy, **kwargs):
        batch = self.plugin.replay_batch
        if batch is None:
            return
        with torch.no_grad():
            x, y = self.plugin._real
            current = F.cross_entropy(strategy.model(x), y)
            replay = F.cross_entropy(strategy.model(batch.images), batch.targets)
            t = self.plugin.experiences_seen
            self.checks.append((float(strategy.loss), float(current / t + (1 - 1 / t) * replay), t))


def run(plugin, stream, experiences=3, epochs=1, mb=20, recorder=True, seed=0, make_solver=None):
    """Train a tiny solver with the plugin on the first experiences; returns (strategy, recorder)."""
    torch.manual_seed(seed)
    solver = make_solver() if make_solver else torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    rec = Recorder(plugin) if recorder else None
    strategy = Naive(model=solver, optimizer=torch.optim.Adam(solver.parameters(), 1e-3), train_mb_size=mb,
                     train_epochs=epochs, eval_mb_size=100, plugins=[plugin] + ([rec] if rec else []),
                     evaluator=None)
    for experience in stream.train_stream[:experiences]:
        strategy.train(experience)
    return strategy, rec


VALID = [(s, lab) for s in SOURCES for lab in LABEL_MODES if not (s == "prior" and lab == "stored")]


@pytest.mark.parametrize("source,labels", VALID)
def test_replay_set_per_source_and_label_mode(source, labels, stream, make_ali):
    torch.manual_seed(0)
    ali = make_ali(conditional=source == "conditional")
    plugin = ALIReplayPlugin(ali, source=source, labels=labels, replay_size=60, memory_bytes=2000)
    _, rec = run(plugin, stream, experiences=3)
    assert rec.replays[0] is None  # first experience: no replay
    for t, replay in enumerate(rec.replays[1:], start=2):
        old = list(range(2 * (t - 1)))
        assert len(replay) == 60
        assert replay.images.shape == (60, 1, 8, 8) and replay.images.dtype == torch.uint8  # stored as data sets are
        batch = replay.batch(torch.arange(60))
        assert batch.images.dtype == torch.float32
        assert 0.0 <= float(batch.images.min()) and float(batch.images.max()) <= 1.0
        assert torch.equal(batch.images * 255, replay.images.float())
        assert torch.equal(replay.tasks, torch.zeros(60, dtype=torch.long))
        if labels == "solver_soft":
            assert replay.targets.dtype == torch.float32 and replay.targets.shape == (60, 10)
            seen = torch.zeros(10, dtype=torch.bool)
            seen[: 2 * t] = True  # distillation over every class seen so far, the current ones included
            assert torch.equal(replay.kd_mask, seen.expand(60, 10))
        else:
            assert replay.targets.dtype == torch.int64 and replay.targets.shape == (60,)
            assert set(replay.targets.tolist()) <= set(old)
        if source != "prior":
            assert set(replay.classes.tolist()) <= set(old)
            counts = torch.bincount(replay.classes, minlength=len(old))[: len(old)]
            assert int(counts.max() - counts.min()) <= 1, counts  # class-balanced
            if labels == "stored":
                assert torch.equal(replay.targets, replay.classes)
    images, preview_labels = plugin.last_replay
    assert images.shape == (60, 1, 8, 8) and images.device.type == "cpu"
    assert set(preview_labels.tolist()) <= set(range(4))


@pytest.mark.parametrize("kwargs,message", [
    (dict(source="vae"), "valid values: prior, class_latent, latent_memory, conditional"),
    (dict(labels="soft"), "valid values: stored, solver_soft, solver_hard"),
    (dict(weighting="concat"), "unknown config key 'weighting'.*accepted keys: optim.lr_d"),
    (dict(covariance="low_rank"), "valid values: diag, full"),
    (dict(source="prior", labels="stored"), "prior samples carry no labels"),
    (dict(source="conditional"), "needs a class-conditional generator"),
    (dict(temperature=0), "'temperature': must be > 0"),
    (dict(replay_size=0), "'replay_size': must be >= 1"),
    (dict(optim={"lr": 0.1}), "unknown config key 'optim.lr'"),
    (dict(round_trip_weight=1.5), r"'round_trip_weight': must be in \[0, 1\], got 1.5"),
    (dict(round_trip_weight=-0.1), r"'round_trip_weight': must be in \[0, 1\], got -0.1"),
])
def test_invalid_arguments_raise_config_error(kwargs, message, make_ali):
    with pytest.raises(ConfigError, match=message):
        ALIReplayPlugin(make_ali(), **kwargs)


def test_encoder_free_model_only_takes_encoder_free_sources(make_ali):
    gan = make_ali(encoder=False)
    for source in ("class_latent", "latent_memory"):
        with pytest.raises(ConfigError, match="needs an encoder"):
            ALIReplayPlugin(gan, source=source)
    ALIReplayPlugin(gan, source="prior", labels="solver_hard")


def test_replay_is_made_without_autograd_history(stream, make_ali):
    torch.manual_seed(0)
    plugin = ALIReplayPlugin(make_ali(), source="class_latent", labels="solver_soft", replay_size=40)
    _, rec = run(plugin, stream, experiences=2)
    replay = rec.replays[1]
    for tensor in (replay.images, replay.targets, plugin.last_replay[0]):
        assert tensor.requires_grad is False and tensor.grad_fn is None


def test_inverse_t_loss_matches_hand_computation(stream, make_ali):
    torch.manual_seed(0)
    plugin = ALIReplayPlugin(make_ali(), source="latent_memory", labels="stored", memory_bytes=2000)
    _, rec = run(plugin, stream, experiences=3)
    assert {t for *_, t in rec.checks} == {2, 3}
    for total, by_hand, _ in rec.checks:
        assert total == pytest.approx(by_hand, rel=1e-5, abs=1e-6)
    last = plugin.last_losses
    t = plugin.experiences_seen
    assert float(last["total"]) == pytest.approx(float(last["current"] / t + (1 - 1 / t) * last["replay"]), rel=1e-6)


def test_round_trips_of_the_real_batch_enter_the_current_loss(stream, make_ali):
    torch.manual_seed(0)
    w = 0.4
    plugin = ALIReplayPlugin(make_ali(), source="latent_memory", labels="stored", memory_bytes=2000,
                             round_trip_weight=w)
    strategy, _ = run(plugin, stream, experiences=2, recorder=False)
    last, t = plugin.last_losses, plugin.experiences_seen
    assert float(last["total"]) == pytest.approx(
        float(((1 - w) * last["current"] + w * last["round_trips"]) / t + (1 - 1 / t) * last["replay"]), rel=1e-6)
    # by hand, on the last experience's first images: the solver's loss on G_x(G_z(x)) with x's labels
    images, labels, _ = experience_tensors(stream.train_stream[1])
    images, labels = images[:20], labels[:20]
    generator = plugin.generator
    with torch.no_grad():
        trips = generator.decode(generator.encode(images, labels), labels)
        by_hand = F.cross_entropy(strategy.model(trips), labels)
    plugin._real = (images, labels)
    strategy.mbatch = (images, labels, torch.zeros_like(labels))  # as within an iteration
    assert float(plugin._round_trip_loss(strategy)) == pytest.approx(float(by_hand), rel=1e-5)
    assert float(last["round_trips"]) > 0


def test_round_trips_need_an_encoder(stream, make_ali):
    plugin = ALIReplayPlugin(make_ali(encoder=False), source="prior", labels="solver_hard", round_trip_weight=0.5)
    with pytest.raises(ConfigError, match="round_trip_weight is for a solver that reads images and a generator "
                                          "with an encoder.*this generator has none"):
        run(plugin, stream, experiences=1, recorder=False)


def test_distillation_loss():
    student = torch.tensor([[2.0, 0.0, 5.0, -1.0]])
    teacher = torch.tensor([[1.0, 3.0, 9.0]])  # narrower: the student's 4th class is new
    mask = torch.tensor([[True, True, False, True]])
    p = F.softmax(torch.tensor([1.0, 3.0, -1e4]) / 2, 0)
    log_q = F.log_softmax(torch.tensor([2.0, 0.0, -1.0]) / 2, 0)
    expected = 4 * float((p * (p.log().clamp_min(-1e4) - log_q)).sum())
    assert float(distillation_loss(student, teacher, mask, 2.0)) == pytest.approx(expected, rel=1e-5)
    same = distillation_loss(teacher[:, :2], teacher[:, :2], mask[:, :2], 2.0)
    assert float(same) == pytest.approx(0, abs=1e-7)


def test_ali_trains_with_its_own_optimizers(stream, make_ali):
    torch.manual_seed(0)
    ali = make_ali()
    before = copy.deepcopy(ali.state_dict())
    plugin = ALIReplayPlugin(ali, source="class_latent")
    strategy, rec = run(plugin, stream, experiences=1)
    assert rec.replays == [None]  # the first experience trains on real data only
    solver_params = {id(p) for group in strategy.optimizer.param_groups for p in group["params"]}
    assert not solver_params & {id(p) for p in ali.parameters()}
    d_params = {id(p) for p in ali.discriminator.parameters()}
    assert {id(p) for g in plugin.generator.optimizers.d.param_groups for p in g["params"]} == d_params
    changed = [k for k, v in ali.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("discriminator") for k in changed)
    assert any(k.startswith("decoder") for k in changed) and any(k.startswith("encoder") for k in changed)


def test_ali_epochs_control_the_generator_budget(stream, make_ali):
    steps = {}
    for ali_epochs in (None, 1, 3):
        torch.manual_seed(0)
        plugin = ALIReplayPlugin(make_ali(), source="class_latent", ali_epochs=ali_epochs)
        calls = []
        original = plugin.generator.step
        plugin.generator.step = lambda *a, _o=original, _c=calls: (_c.append(1), _o(*a))
        run(plugin, stream, experiences=2, epochs=2, recorder=False)
        steps[ali_epochs] = len(calls)
    per_epoch = 80 // 20
    assert steps == {None: 2 * 2 * per_epoch, 1: 2 * per_epoch, 3: 2 * 3 * per_epoch}


@pytest.mark.parametrize("first, later, expected", [(3, 1, [3, 1, 1]), (1, None, [1, 2, 2]), (None, 1, [1, 1, 1])])
def test_first_ali_epochs_set_the_first_experiences_budget(stream, make_ali, first, later, expected):
    torch.manual_seed(0)
    plugin = ALIReplayPlugin(make_ali(), source="class_latent", ali_epochs=later, first_ali_epochs=first)
    per_experience = []
    original = plugin.generator.step

    def counting_step(*args):
        per_experience[-1] += 1
        original(*args)

    plugin.generator.step = counting_step
    starts = type("Starts", (SupervisedPlugin,), {
        "before_training_exp": lambda self, strategy, **kw: per_experience.append(0)})()
    torch.manual_seed(0)
    solver = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    strategy = Naive(model=solver, optimizer=torch.optim.Adam(solver.parameters(), 1e-3), train_mb_size=20,
                     train_epochs=2, eval_mb_size=100, plugins=[starts, plugin], evaluator=None)
    for experience in stream.train_stream[:3]:
        strategy.train(experience)
    assert per_experience == [e * (80 // 20) for e in expected]
    with pytest.raises(ConfigError, match="first_ali_epochs"):
        ALIReplayPlugin(make_ali(), first_ali_epochs=-1)


def test_task_incremental_replay_gets_the_task_of_its_class(task_stream, make_ali):
    torch.manual_seed(0)
    plugin = ALIReplayPlugin(make_ali(), source="latent_memory", labels="stored", memory_bytes=3000)
    _, rec = run(plugin, task_stream, experiences=3)
    replay = rec.replays[2]
    assert plugin.groups == [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (5, 2)]
    assert torch.equal(replay.tasks, replay.classes // 2)
    assert set(replay.tasks.tolist()) == {0, 1}


def test_memory_bytes_match_hand_count(stream, make_ali):
    torch.manual_seed(0)
    ali = make_ali(latent_dim=4)
    ali_bytes = sum(v.numel() * v.element_size() for v in ali.state_dict().values())

    plugin = ALIReplayPlugin(ali, source="latent_memory", labels="stored", memory_bytes=1000, filter_replay=False)
    run(plugin, stream, experiences=2, recorder=False)
    entry = 4 * 2 + 2  # float16 code + int16 label
    assert len(plugin.source.memory) == 1000 // entry
    assert plugin.nbytes() == ali_bytes + (1000 // entry) * entry

    torch.manual_seed(0)
    plugin = ALIReplayPlugin(make_ali(latent_dim=4), source="class_latent", covariance="full", labels="solver_soft")
    strategy, _ = run(plugin, stream, experiences=2, recorder=False)
    solver_bytes = sum(p.numel() * 4 for p in strategy.model.parameters())
    gaussians = 4 * (4 + 4 * 4) * 4  # 4 classes: float32 mean (4) and covariance (4 x 4)
    assert plugin.nbytes() == ali_bytes + gaussians + solver_bytes

    torch.manual_seed(0)
    plugin = ALIReplayPlugin(make_ali(latent_dim=4), source="class_latent", labels="stored", covariance="diag",
                             filter_replay=False)
    run(plugin, stream, experiences=1, recorder=False)
    assert plugin.nbytes() == ali_bytes + 2 * 4 * (4 + 4)  # diagonal: mean + variance
    assert module_nbytes(None) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda(stream, make_ali):
    torch.manual_seed(0)
    plugin = ALIReplayPlugin(make_ali(), source="class_latent", labels="solver_soft")
    solver = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    strategy = Naive(model=solver, optimizer=torch.optim.Adam(solver.parameters()), train_mb_size=20,
                     device="cuda", plugins=[plugin], evaluator=None)
    for experience in stream.train_stream[:2]:
        strategy.train(experience)
    assert plugin.ali.device.type == "cuda"


def _teacher_agreement(replay, teacher):
    """Share of replayed examples whose teacher argmax over classes 0 and 1 is their class."""
    with torch.no_grad():
        verdict = teacher(as_float_images(replay.images))[:, :2].argmax(1)
    return float((verdict == replay.classes).float().mean())


@pytest.mark.parametrize("labels", ["solver_soft", "stored"])
def test_filter_replay_keeps_what_the_previous_solver_recognises(stream, make_ali, labels):
    """A half-trained conditional ALI: filtering must raise the share the teacher recognises, keep size and balance."""
    torch.manual_seed(0)
    plugin = ALIReplayPlugin(make_ali(conditional=True), source="conditional", labels=labels, replay_size=400,
                             filter_replay=True, seed=0)
    strategy, _ = run(plugin, stream, experiences=1, epochs=10, recorder=False)
    assert plugin.labeller.needs_teacher
    teacher = copy.deepcopy(strategy.model).eval()
    torch.manual_seed(1)
    plugin.labeller.filter_replay = False
    plain = plugin.maker.make(400, plugin.groups, teacher, plugin.feed)
    assert plugin.last_acceptance is None
    plugin.labeller.filter_replay = True
    filtered = plugin.maker.make(400, plugin.groups, teacher, plugin.feed)
    acceptance = plugin.last_acceptance
    assert 0.0 < acceptance < 1.0  # the tiny ALI makes some examples the solver does not recognise
    assert len(filtered) == 400
    assert torch.bincount(filtered.classes, minlength=2)[:2].tolist() == [200, 200]
    assert _teacher_agreement(filtered, teacher) > max(acceptance, _teacher_agreement(plain, teacher))
    assert filtered.soft == (labels == "solver_soft")
    if labels == "stored":
        assert torch.equal(filtered.targets, filtered.classes)


def test_filter_replay_tops_up_a_class_the_solver_never_recognises(stream, make_ali):
    torch.manual_seed(0)
    plugin = ALIReplayPlugin(make_ali(conditional=True), source="conditional", labels="stored", replay_size=101,
                             filter_replay=True, seed=0)
    run(plugin, stream, experiences=1, epochs=2, recorder=False)

    class SaysZero(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10).float()

    replay = plugin.maker.make(101, plugin.groups, SaysZero(), plugin.feed)
    assert plugin.last_acceptance == pytest.approx(0.5, abs=0.02)
    counts = torch.bincount(replay.classes, minlength=2)[:2].tolist()
    assert len(replay) == 101 and sorted(counts) == [50, 51]  # class 1 filled with its rejected examples
    assert torch.equal(replay.targets, replay.classes)


@pytest.mark.parametrize("ali_batch_size, real", [(None, 20), (8, 8)])
def test_ali_batch_sizes_trim_each_ali_step(stream, make_ali, ali_batch_size, real):
    torch.manual_seed(0)
    plugin = ALIReplayPlugin(make_ali(), source="class_latent", labels="stored", ali_replay_batch_size=5,
                             ali_batch_size=ali_batch_size, ali_epochs=None, optim={"update_order": "simultaneous"})
    sizes = []
    original = plugin.generator.step
    # (real, replayed) examples of each step: the real ones come first and weigh 1/t in total, the others 1 - 1/t
    plugin.generator.step = lambda x, y, weight: (
        sizes.append((len(x), 0) if weight is None else (int((weight == weight[0]).sum()),
                                                          len(x) - int((weight == weight[0]).sum()))),
        original(x, y, weight))
    _, rec = run(plugin, stream, experiences=2, mb=20)
    per_exp = len(sizes) // 2
    assert per_exp == 80 // 20  # as many ALI steps as solver iterations
    assert set(sizes[:per_exp]) == {(real, 0)}
    assert set(sizes[per_exp:]) == {(real, 5)}
    assert set(rec.batch_sizes) == {20}  # the solver's own mini-batches keep their size (inverse_t)
    with pytest.raises(ConfigError, match="ali_replay_batch_size"):
        ALIReplayPlugin(make_ali(), ali_replay_batch_size=0)
    with pytest.raises(ConfigError, match="ali_batch_size"):
        ALIReplayPlugin(make_ali(), ali_batch_size=0)
    with pytest.raises(ConfigError, match="update_order"):
        ALIReplayPlugin(make_ali(), optim={"update_order": "sideways"})


@pytest.mark.parametrize("source", ["class_latent", "latent_memory"])
def test_experiences_are_counted_by_identity_not_by_train_calls(stream, make_ali, source):
    """Training an experience twice leaves its classes current and t unchanged (the 1/t weighting)."""
    torch.manual_seed(0)
    plugin = ALIReplayPlugin(make_ali(), source=source, labels="stored", replay_size=40, memory_bytes=2000)
    strategy, rec = run(plugin, stream, experiences=1)
    strategy.train(stream.train_stream[0])
    assert plugin.experiences_seen == 1 and rec.replays == [None, None]  # nothing old to replay yet
    strategy.train(stream.train_stream[1])
    strategy.train(stream.train_stream[1])
    assert plugin.experiences_seen == 2
    for replay in rec.replays[2:]:
        assert set(replay.classes.tolist()) == {0, 1}  # the repeated experience's classes 2, 3 are not replayed
    assert {t for *_, t in rec.checks} == {2}
