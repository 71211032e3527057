"""The registry: every strategy builds and trains, configs and errors, memory accounting, previews."""
import pytest
import torch
from omegaconf import OmegaConf

from ali_replay.config import resolve_config_path
from ali_replay.errors import ConfigError
from strategies.registry import (STRATEGY_NAMES, StrategyContext, build_strategy, load_strategy_params,
                                 replay_preview, strategy_memory_bytes, strategy_variants)
from strategies.ali_generative_replay import ALIGenerativeReplay


def _ctx(evaluator, **kw):
    base = dict(input_shape=(1, 8, 8), num_classes=10, scenario="class_incremental", train_epochs=1,
                train_mb_size=20, eval_mb_size=100, lr=1e-3, device=torch.device("cpu"), evaluator=evaluator(),
                generator_epochs=1)
    base.update(kw)
    return StrategyContext(**base)


def _small(name, params):
    """Shrink the generators so that the test stays fast."""
    params = OmegaConf.to_container(params) if params is not None else {}
    if name in ("ali_replay", "gan_replay"):
        params.setdefault("model", {}).update(hidden=32, latent_dim=4)
    if name == "vae_replay":
        params.update(hidden=32, latent_dim=4)
    return params


def _specs():
    specs = list(STRATEGY_NAMES)
    specs += [f"ali_replay@{v}" for v in strategy_variants("ali_replay")]
    specs += [f"{n}@{v}" for n in ("er", "vae_replay", "gan_replay") for v in strategy_variants(n)]
    return specs


@pytest.mark.parametrize("spec", _specs())
def test_every_strategy_builds_and_trains(spec, stream, make_solver, evaluator):
    name, params = load_strategy_params(spec)
    torch.manual_seed(0)
    strategy = build_strategy(name, make_solver(), _small(name, params), _ctx(evaluator))
    for experience in stream.train_stream[:2]:
        strategy.train(experience)
    results = strategy.eval(stream.test_stream[:2])
    assert isinstance(results, dict)
    assert strategy_memory_bytes(strategy) >= 0
    preview = replay_preview(strategy)
    if name in ("er", "vae_replay", "gan_replay", "ali_replay"):
        images, labels = preview
        assert images.shape[1:] == (1, 8, 8) and 0 < len(images) <= 64 and len(labels) == len(images)
    else:
        assert preview is None


def test_task_incremental_context(task_stream, make_solver, evaluator):
    torch.manual_seed(0)
    strategy = build_strategy("ali_replay", make_solver(), _small("ali_replay", None),
                              _ctx(evaluator, scenario="task_incremental"))
    for experience in task_stream.train_stream[:2]:
        strategy.train(experience)
    with pytest.raises(ConfigError, match="class_incremental, task_incremental"):
        build_strategy("naive", make_solver(), None, _ctx(evaluator, scenario="domain"))


def test_unknown_names_and_variants(make_solver, evaluator):
    with pytest.raises(ConfigError, match="naive, joint, er, vae_replay, gan_replay, ali_replay"):
        build_strategy("ewc", make_solver(), None, _ctx(evaluator))
    with pytest.raises(ConfigError, match="valid strategies"):
        load_strategy_params("dgr@x")
    with pytest.raises(ConfigError, match="valid variants: prior, prior_hard"):
        load_strategy_params("ali_replay@nope")
    with pytest.raises(ConfigError, match="accepted: mem_size"):
        build_strategy("er", make_solver(), {"memory": 3}, _ctx(evaluator))
    message = "unknown config key 'depth' in ali_replay params 'model'; accepted keys: preset"
    with pytest.raises(ConfigError, match=message):
        build_strategy("ali_replay", make_solver(), {"model": {"depth": 3}}, _ctx(evaluator))
    with pytest.raises(ConfigError, match="valid values"):
        build_strategy("ali_replay", make_solver(), {"source": "memory"}, _ctx(evaluator))


def test_variants_merge_onto_defaults():
    _, defaults = load_strategy_params("ali_replay")
    _, variant = load_strategy_params("ali_replay@latent_memory")
    assert variant.source == "latent_memory" and variant.model.conditional is False
    assert variant.model.latent_dim == defaults.model.latent_dim and variant.optim == defaults.optim
    _, conditional = load_strategy_params("ali_replay@conditional")
    assert conditional.model.conditional is True
    assert resolve_config_path("ali_replay", "strategy").name == "ali_replay.yaml"
    assert set(strategy_variants("ali_replay")) >= {"prior", "class_latent", "latent_memory", "conditional",
                                                    "class_latent_soft"}


def test_build_with_variant_spec_and_overrides(make_solver, evaluator):
    strategy = build_strategy("ali_replay@latent_memory", make_solver(), {"memory_bytes": 500},
                              _ctx(evaluator))
    assert isinstance(strategy, ALIGenerativeReplay)
    plugin = strategy.replay_plugin
    assert plugin.source == "latent_memory" and plugin.memory.budget_bytes == 500
    assert plugin.ali_epochs == 1  # from the context's generator_epochs


def test_generator_init_follows_the_seed_only(make_solver, evaluator):
    weights = []
    for _ in range(2):
        torch.manual_seed(123)
        strategy = build_strategy("ali_replay", make_solver(), _small("ali_replay", None), _ctx(evaluator, seed=5))
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
    _, params = load_strategy_params("ali_replay@class_latent")
    ali = build_strategy("ali_replay", make_solver(), _small("ali_replay", params), _ctx(evaluator))
    ali.train(stream.train_stream[0])
    ali_bytes = sum(t.numel() * t.element_size() for t in ali.ali.state_dict().values())
    plugin = ali.replay_plugin
    stats = sum(t.numel() * 4 for s in plugin.gaussians.values() for t in s.values())
    assert stats == 2 * (4 + (16 if plugin.covariance == "full" else 4)) * 4
    assert strategy_memory_bytes(ali) == ali_bytes + stats
    # the default (conditional ALI, distillation): the ALI and the frozen previous solver
    default = build_strategy("ali_replay", solver, _small("ali_replay", None), _ctx(evaluator))
    default.train(stream.train_stream[0])
    cond_bytes = sum(t.numel() * t.element_size() for t in default.ali.state_dict().values())
    assert default.ali.conditional and strategy_memory_bytes(default) == cond_bytes + solver_bytes
