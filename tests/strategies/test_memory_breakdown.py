"""strategy_memory: the bytes a strategy keeps, by kind, adding up to strategy_memory_bytes."""
import pytest
import torch

from strategies import MEMORY_KINDS, build_strategy, strategy_memory, strategy_memory_bytes

SMALL_ALI = {"model": {"hidden": 32, "latent_dim": 4}}


def _trained(spec, stream, make_solver, make_context, params=None, experiences=2):
    """`spec` built for the tiny digits and trained on its first experiences."""
    torch.manual_seed(0)
    strategy = build_strategy(spec, make_solver(), params, make_context())
    for experience in stream.train_stream[:experiences]:
        strategy.train(experience)
    return strategy


def _checked(strategy) -> dict:
    """The breakdown, after checking its kinds and that it adds up to the total."""
    memory = strategy_memory(strategy).as_dict()
    assert tuple(memory) == MEMORY_KINDS and all(isinstance(v, int) and v >= 0 for v in memory.values())
    assert sum(memory.values()) == strategy_memory_bytes(strategy)
    return memory


def test_naive_keeps_nothing(stream, make_solver, make_context):
    memory = _checked(_trained("naive", stream, make_solver, make_context, experiences=1))
    assert memory == dict.fromkeys(MEMORY_KINDS, 0)


def test_er_keeps_stored_examples_only(stream, make_solver, make_context):
    memory = _checked(_trained("er", stream, make_solver, make_context, {"mem_size": 30}))
    assert memory == {"generator": 0, "stored_examples": 30 * (64 + 8), "statistics": 0, "teacher": 0}


def test_ali_replay_default_keeps_a_generator_and_its_teacher(stream, make_solver, make_context):
    strategy = _trained("ali_replay", stream, make_solver, make_context, SMALL_ALI)
    memory = _checked(strategy)
    ali_bytes = sum(t.numel() * t.element_size() for t in strategy.ali.state_dict().values())
    solver_bytes = sum(p.numel() * p.element_size() for p in make_solver().parameters())
    assert memory == {"generator": ali_bytes, "stored_examples": 0, "statistics": 0, "teacher": solver_bytes}


def test_latent_memory_codes_are_stored_examples(stream, make_solver, make_context):
    params = {**SMALL_ALI, "memory_bytes": 500}
    strategy = _trained("ali_replay@latent_memory", stream, make_solver, make_context, params)
    memory = _checked(strategy)
    stored = strategy.replay_plugin.source.memory
    assert memory["stored_examples"] == len(stored) * (4 * 2 + 2) > 0  # float16 codes, int16 labels
    assert memory["generator"] > 0 and memory["statistics"] == 0 and memory["teacher"] == 0


def test_class_latent_keeps_statistics(stream, make_solver, make_context):
    memory = _checked(_trained("ali_replay@class_latent", stream, make_solver, make_context, SMALL_ALI))
    assert memory["statistics"] == 4 * (4 + 16) * 4  # 4 classes: float32 mean and full covariance each
    assert memory["generator"] > 0 and memory["stored_examples"] == 0 and memory["teacher"] == 0


@pytest.mark.parametrize("spec", ["vae_replay", "avalanche_gr"])
def test_avalanches_generative_replay_keeps_its_generator_and_the_solver(spec, stream, make_solver, make_context):
    params = {"hidden": 16, "latent_dim": 2} if spec == "vae_replay" else None
    strategy = _trained(spec, stream, make_solver, make_context, params, experiences=1)
    memory = _checked(strategy)
    generator = strategy.generator_strategy.model
    generator_bytes = sum(t.numel() * t.element_size() for t in generator.state_dict().values())
    solver_bytes = sum(p.numel() * p.element_size() for p in make_solver().parameters())
    assert memory == {"generator": generator_bytes, "stored_examples": 0, "statistics": 0, "teacher": solver_bytes}
