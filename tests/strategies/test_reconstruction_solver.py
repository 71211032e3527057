"""ReconstructionSolver: any solver fed the ALI's round trip, never training the ALI itself."""
import copy

import pytest
import torch

from ali_replay.errors import ConfigError
from strategies.reconstruction_solver import ReconstructionSolver
from strategies import build_strategy


def _params(**kw):
    params = dict(model={"conditional": False, "latent_dim": 4, "hidden": 32}, source="class_latent",
                  labels="stored", solver_input="reconstruction")
    params.update(kw)
    return params


def test_logits_are_the_solvers_on_reconstructions(make_ali, make_solver, digits):
    torch.manual_seed(0)
    ali, solver = make_ali(), make_solver()
    model = ReconstructionSolver(ali, solver)
    x = digits[0][:30]
    ali.train()
    logits = model(x)
    assert logits.shape == (30, 10)
    ali.eval()
    assert torch.allclose(logits, solver(ali.reconstruct(x)), atol=1e-6)
    assert ali.training is False  # the caller's mode is left as it was
    ali.train()
    model(x)
    assert ali.training is True and ali.encoder.training is True


def test_a_normalised_stream_goes_round_the_ali_in_its_unit_space(make_ali, make_solver, digits):
    from strategies import InputSpace

    torch.manual_seed(0)
    ali, solver = make_ali().eval(), make_solver()
    space = InputSpace(mean=0.3, std=0.4)
    model = ReconstructionSolver(ali, solver, input_space=space)
    unit = digits[0][:30]
    normalised = (unit - 0.3) / 0.4
    # The ALI sees the [0, 1] images the stream normalised, and the solver a normalised reconstruction.
    assert torch.allclose(model.reconstruct(normalised), (ali.reconstruct(unit) - 0.3) / 0.4, atol=1e-5)


def test_parameters_are_the_solvers_only(make_ali, make_solver):
    ali, solver = make_ali(), make_solver()
    model = ReconstructionSolver(ali, solver)
    solver_ids = {id(p) for p in solver.parameters()}
    assert {id(p) for p in model.parameters()} == solver_ids
    assert not any(id(p) in solver_ids for p in ali.parameters())
    assert all(key.startswith("solver.") for key in model.state_dict())


def test_classification_loss_never_reaches_the_ali(make_ali, make_solver, digits, fit_batch):
    torch.manual_seed(0)
    ali = make_ali()
    model = ReconstructionSolver(ali, make_solver())
    before = copy.deepcopy(ali.state_dict())
    losses = fit_batch(model, digits[0][:64], digits[1][:64])
    assert losses[-1] < losses[0]  # the solver learns ...
    for key, value in ali.state_dict().items():  # ... and the ALI is untouched, BatchNorm statistics included
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in ali.parameters())


def test_a_deep_copy_keeps_the_ali_it_was_trained_with(make_ali, make_solver, digits):
    torch.manual_seed(0)
    ali = make_ali()
    model = ReconstructionSolver(ali, make_solver())
    teacher = copy.deepcopy(model).eval()
    x = digits[0][:16]
    expected = teacher(x)
    with torch.no_grad():
        for p in ali.encoder.parameters():
            p.add_(0.5)
    assert torch.allclose(teacher(x), expected)
    assert not torch.allclose(model(x), expected)


def test_bad_alis_are_refused(make_ali, make_solver):
    with pytest.raises(ConfigError, match="unconditional"):
        ReconstructionSolver(make_ali(conditional=True), make_solver())
    with pytest.raises(ConfigError, match="encoder"):
        ReconstructionSolver(make_ali(encoder=False), make_solver())


def test_registry_wraps_the_benchmarks_solver(stream, make_solver, make_context):
    """ali_epochs=0 freezes the ALI: training must change the solver and nothing of the ALI."""
    torch.manual_seed(0)
    solver = make_solver()
    strategy = build_strategy("ali_replay", solver, _params(ali_epochs=0), make_context(train_epochs=2))
    model = strategy.model
    assert isinstance(model, ReconstructionSolver) and model.ali is strategy.ali and model.solver is solver
    assert {id(p) for g in strategy.optimizer.param_groups for p in g["params"]} == \
        {id(p) for p in solver.parameters()}
    ali_before = copy.deepcopy(strategy.ali.state_dict())
    solver_before = copy.deepcopy(solver.state_dict())
    for experience in stream.train_stream[:2]:
        strategy.train(experience)
    for key, value in strategy.ali.state_dict().items():
        assert torch.equal(value, ali_before[key]), key
    assert any(not torch.equal(v, solver_before[k]) for k, v in solver.state_dict().items())
    # The second experience replays the first one's classes.
    assert set(strategy.replay_plugin.last_replay[1].tolist()) <= {0, 1}


def test_registry_refuses_it_where_it_cannot_work(make_solver, make_context):
    with pytest.raises(ConfigError, match="class_incremental"):
        build_strategy("ali_replay", make_solver(), _params(), make_context(scenario="task_incremental"))
    with pytest.raises(ConfigError, match="unconditional"):
        build_strategy("ali_replay", make_solver(), _params(model={"conditional": True, "latent_dim": 4}),
                       make_context())
    with pytest.raises(ConfigError, match="solver_input"):
        build_strategy("ali_replay", make_solver(), _params(solver_input="pixels"), make_context())
