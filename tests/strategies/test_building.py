"""build_strategy and the inspection: every strategy builds and trains, its settings reach it, kept bytes, previews."""
import pytest
import torch
from omegaconf import OmegaConf

from ali_replay.errors import ConfigError
from strategies import (STRATEGY_NAMES, StrategyContext, build_strategy, replay_preview, resolve, strategy_memory,
                        strategy_memory_bytes, strategy_phases, strategy_recipes)
from strategies.ali_generative_replay import ALIGenerativeReplay
from strategies.replay import replay_fields


def _ctx(evaluator, **kw):
    base = dict(input_shape=(1, 8, 8), num_classes=10, scenario="class_incremental", train_epochs=1,
                train_mb_size=20, eval_mb_size=100, lr=1e-3, device=torch.device("cpu"), evaluator=evaluator(),
                generator_epochs=1)
    base.update(kw)
    return StrategyContext(**base)


def _small(name, params=None):
    """Shrink the generators so that the test stays fast."""
    params = dict(params or {})
    if name in ("ali_replay", "gan_replay", "dgr"):
        params.setdefault("model", {}).update(hidden=32, latent_dim=4)
    if name == "vae_replay":
        params.update(hidden=32, latent_dim=4)
    return params


COMPOSED = "ali_replay@filtered+optim.update_order=simultaneous+labels=solver_hard+ali_epochs=2"


def _specs():
    """Every strategy, every recipe of each, and one spec composed of a recipe and overrides."""
    specs = list(STRATEGY_NAMES)
    specs += [f"{n}@{r}" for n in STRATEGY_NAMES for r in strategy_recipes(n)]
    return specs + [COMPOSED]


@pytest.mark.parametrize("spec", _specs())
def test_every_strategy_builds_and_trains(spec, stream, make_solver, evaluator):
    name = resolve(spec).name
    torch.manual_seed(0)
    strategy = build_strategy(spec, make_solver(), _small(name), _ctx(evaluator))
    assert strategy.strategy_spec.spec == spec and strategy.strategy_name == name
    for experience in stream.train_stream[:2]:
        strategy.train(experience)
    results = strategy.eval(stream.test_stream[:2])
    assert isinstance(results, dict)
    assert strategy_memory_bytes(strategy) >= 0
    preview = replay_preview(strategy)
    generative = name in ("avalanche_gr", "vae_replay", "dgr", "gan_replay", "ali_replay")
    assert (strategy_phases(strategy).get("generator_steps", 0) > 0) == generative  # its own generator's seconds
    if name in ("er", "avalanche_gr", "vae_replay", "dgr", "gan_replay", "ali_replay"):
        images, labels = preview
        assert images.shape[1:] == (1, 8, 8) and 0 < len(images) <= 64 and len(labels) == len(images)
        assert 0 <= float(images.min()) and float(images.max()) <= 1  # previews are pictures in [0, 1]
    else:
        assert preview is None


def test_task_incremental_context(task_stream, make_solver, evaluator):
    torch.manual_seed(0)
    strategy = build_strategy("ali_replay", make_solver(), _small("ali_replay"),
                              _ctx(evaluator, scenario="task_incremental"))
    for experience in task_stream.train_stream[:2]:
        strategy.train(experience)
    with pytest.raises(ConfigError, match="does not take scenario 'domain'; it takes class_incremental, "
                                          "task_incremental"):
        build_strategy("naive", make_solver(), None, _ctx(evaluator, scenario="domain"))


def test_settings_errors_stop_the_build(make_solver, evaluator):
    with pytest.raises(ConfigError, match="valid strategies"):
        build_strategy("ewc", make_solver(), None, _ctx(evaluator))
    with pytest.raises(ConfigError, match="unknown config key 'memory' in er params; accepted keys: mem_size"):
        build_strategy("er", make_solver(), {"memory": 3}, _ctx(evaluator))
    with pytest.raises(ConfigError, match="a resolved spec carries its settings"):
        build_strategy(resolve("er"), make_solver(), {"mem_size": 3}, _ctx(evaluator))
    with pytest.raises(ConfigError, match="needs the benchmark's StrategyContext"):
        build_strategy("er", make_solver())


@pytest.mark.parametrize("recipe", [None] + strategy_recipes("ali_replay"))
def test_a_recipes_settings_reach_the_plugin(recipe, make_solver, evaluator):
    spec = "ali_replay" if recipe is None else f"ali_replay@{recipe}"
    params = OmegaConf.structured(resolve(spec, (1, 8, 8)).settings)  # a bare name: the digits' recipe
    strategy = build_strategy(spec, make_solver(), None, _ctx(evaluator, generator_epochs=3))  # built, not trained
    plugin = strategy.replay_plugin
    for key in replay_fields():
        expected = params[key]
        if key == "ali_epochs" and expected is None:
            expected = 3  # the benchmark's generator budget fills in
        if key == "source" and expected is None:
            expected = "conditional" if params.model.conditional else "class_latent"
        got = getattr(plugin.config, key)
        assert (OmegaConf.structured(got) if key == "optim" else got) == expected, key
    assert strategy.ali.conditional == params.model.conditional and strategy.ali.latent_dim == params.model.latent_dim
    assert (type(strategy.model).__name__ == "ReconstructionSolver") == (params.solver_input == "reconstruction")


def test_build_with_recipe_spec_and_overrides(make_solver, evaluator):
    strategy = build_strategy("ali_replay@latent_memory+labels=solver_hard", make_solver(), {"memory_bytes": 500},
                              _ctx(evaluator))
    assert isinstance(strategy, ALIGenerativeReplay)
    plugin = strategy.replay_plugin
    assert plugin.config.source == "latent_memory" and plugin.source.memory.budget_bytes == 500
    assert plugin.config.labels == "solver_hard"
    assert plugin.config.ali_epochs == 1  # from the context's generator_epochs


def test_generator_init_follows_the_seed_only(make_solver, evaluator):
    weights = []
    for _ in range(2):
        torch.manual_seed(123)
        strategy = build_strategy("ali_replay", make_solver(), _small("ali_replay"), _ctx(evaluator, seed=5))
        weights.append(strategy.ali.decoder.state_dict())
        after = torch.rand(1)
    assert all(torch.equal(a, b) for a, b in zip(weights[0].values(), weights[1].values()))
    torch.manual_seed(123)
    make_solver()
    assert torch.equal(torch.rand(1), after)  # building did not consume the caller's random numbers


def test_memory_accounting(stream, make_solver, evaluator):
    solver = make_solver()
    solver_bytes = sum(p.numel() * 4 for p in solver.parameters())
    image = 64  # 8x8 uint8
    # naive: nothing
    naive = build_strategy("naive", solver, None, _ctx(evaluator))
    naive.train(stream.train_stream[0])
    assert strategy_memory_bytes(naive) == 0
    # joint: every example seen so far
    joint = build_strategy("joint", make_solver(), None, _ctx(evaluator))
    for experience in stream.train_stream[:2]:
        joint.train(experience)
    assert strategy_memory_bytes(joint) == 160 * (image + 8)
    # er: the buffer
    er = build_strategy("er", make_solver(), {"mem_size": 30}, _ctx(evaluator))
    for experience in stream.train_stream[:2]:
        er.train(experience)
    assert strategy_memory_bytes(er) == 30 * (image + 8)
    # er given a byte budget: as many examples as fit, counted the same way
    er_bytes = build_strategy("er", make_solver(), {"memory_bytes": 40 * (image + 8) + 71}, _ctx(evaluator))
    for experience in stream.train_stream[:2]:
        er_bytes.train(experience)
    assert strategy_memory_bytes(er_bytes) == 40 * (image + 8)
    with pytest.raises(ConfigError, match="holds no example"):
        build_strategy("er", make_solver(), {"memory_bytes": 10}, _ctx(evaluator))
    # vae_replay: the VAE and the frozen previous solver
    vae = build_strategy("vae_replay", make_solver(), {"hidden": 16, "latent_dim": 2}, _ctx(evaluator))
    generator = vae.generator_strategy.model
    vae_bytes = sum(t.numel() * t.element_size() for t in generator.state_dict().values())
    assert strategy_memory_bytes(vae) == vae_bytes + solver_bytes
    # ali_replay with stored labels: the ALI and the class statistics
    ali = build_strategy("ali_replay@class_latent", make_solver(), _small("ali_replay"), _ctx(evaluator))
    ali.train(stream.train_stream[0])
    ali_bytes = sum(t.numel() * t.element_size() for t in ali.ali.state_dict().values())
    plugin = ali.replay_plugin
    stats = sum(t.numel() * 4 for s in plugin.source.gaussians.values() for t in s.values())
    assert stats == 2 * (4 + (16 if plugin.config.covariance == "full" else 4)) * 4
    assert strategy_memory_bytes(ali) == ali_bytes + stats
    assert strategy_memory(ali).statistics == stats and strategy_memory(ali).as_dict()["generator"] == ali_bytes
    # the default (conditional ALI, distillation): the ALI and the frozen previous solver
    default = build_strategy("ali_replay", solver, _small("ali_replay"), _ctx(evaluator))
    default.train(stream.train_stream[0])
    cond_bytes = sum(t.numel() * t.element_size() for t in default.ali.state_dict().values())
    assert default.ali.conditional and strategy_memory_bytes(default) == cond_bytes + solver_bytes


def test_a_bare_name_builds_the_recipe_of_its_streams_shape(make_solver, evaluator):
    strategy = build_strategy("ali_replay", make_solver(), {"model": {"hidden": 32}},
                              _ctx(evaluator, input_shape=(3, 32, 32)))  # built, not trained
    assert type(strategy.model).__name__ == "LatentSolver" and strategy.ali.latent_dim == 64
    assert strategy.strategy_spec.recipe == "features"


def test_the_inspection_needs_a_built_strategy(make_solver, evaluator):
    from avalanche.training import Naive

    by_hand = Naive(model=make_solver(), optimizer=torch.optim.Adam(make_solver().parameters()))
    with pytest.raises(ConfigError, match="was not built by strategies.build_strategy"):
        strategy_memory(by_hand)
