"""ALITraining as the generator strategy of Avalanche's own GenerativeReplay."""
import copy

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import GenerativeReplay
from avalanche.training.plugins import GenerativeReplayPlugin

from ali_replay.errors import ConfigError
from ali_replay.training import make_optimizers
from ali_replay.config import OptimConfig
from strategies.ali_training import ALITraining


class BatchSizes(SupervisedPlugin):
    """Records the mini-batch size each iteration ends with (after replay was appended)."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def after_training_iteration(self, strategy, **kwargs):
        self.sizes.append(len(strategy.mb_x))


def test_alitraining_inside_avalanche_generative_replay(stream, make_ali, make_solver, evaluator):
    torch.manual_seed(0)
    ali, solver = make_ali(), make_solver()
    initial = copy.deepcopy(ali.state_dict())
    generator_sizes, solver_sizes = BatchSizes(), BatchSizes()
    generator = ALITraining(model=ali, train_mb_size=20, train_epochs=1,
                            plugins=[GenerativeReplayPlugin(), generator_sizes])
    strategy = GenerativeReplay(model=solver, optimizer=torch.optim.Adam(solver.parameters(), 1e-3),
                                generator_strategy=generator, train_mb_size=20, train_epochs=1,
                                plugins=[solver_sizes], evaluator=evaluator())
    for experience in stream.train_stream[:2]:
        strategy.train(experience)

    changed = {k.split(".")[0] for k, v in ali.state_dict().items() if not torch.equal(v, initial[k])}
    assert changed == {"encoder", "decoder", "discriminator"}
    per_exp = 80 // 20
    # The second experience's batches carry as many replayed examples as real ones, for both.
    assert generator_sizes.sizes == [20] * per_exp + [40] * per_exp
    assert solver_sizes.sizes == [20] * per_exp + [40] * per_exp
    # The template's make_optimizer left the two optimizers' parameter sets alone.
    d_ids = {id(p) for p in ali.discriminator.parameters()}
    assert {id(p) for g in generator.ali_optimizers.d.param_groups for p in g["params"]} == d_ids
    assert not d_ids & {id(p) for g in generator.ali_optimizers.g.param_groups for p in g["params"]}
    assert set(generator.last_stats) >= {"loss_d", "loss_g"}


def test_alitraining_takes_ali_optimizers_only(make_ali):
    ali = make_ali()
    ALITraining(model=ali, optimizer=make_optimizers(ali, OptimConfig()))
    with pytest.raises(ConfigError, match="two optimizers"):
        ALITraining(model=ali, optimizer=torch.optim.Adam(ali.parameters()))
    with pytest.raises(ConfigError, match="ALI"):
        ALITraining(model=torch.nn.Linear(2, 2))


def test_conditional_ali_refuses_mock_labels(stream, make_ali):
    strategy = ALITraining(model=make_ali(conditional=True), train_mb_size=20,
                           plugins=[GenerativeReplayPlugin()])
    with pytest.raises(ConfigError, match="unconditional"):
        strategy.train(stream.train_stream[0])


def test_alitraining_trains_a_conditional_ali_alone(stream, make_ali):
    torch.manual_seed(0)
    ali = make_ali(conditional=True)
    before = copy.deepcopy(ali.decoder.state_dict())
    ALITraining(model=ali, train_mb_size=20).train(stream.train_stream[0])
    assert any(not torch.equal(v, before[k]) for k, v in ali.decoder.state_dict().items())
