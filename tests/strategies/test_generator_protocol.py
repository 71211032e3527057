"""The generator protocol: a generator handed to the plugin is checked for every member the plugin calls."""
import pytest
import torch

from ali_replay.errors import ConfigError
from strategies import ALIReplayPlugin
from strategies.replay import GENERATOR_MEMBERS, ALIGenerator, replay_optim

from .test_ali_replay_plugin import run


class Delegating:
    """A generator of a third kind: an ALIGenerator behind plain delegation, members listed explicitly."""

    def __init__(self, inner: ALIGenerator, leave_out: tuple = ()):
        self._inner = inner
        self.steps = 0
        for name in GENERATOR_MEMBERS:
            if name not in leave_out and name != "step":
                setattr(self, name, getattr(inner, name))

    def step(self, x, y, weight, anchors=None):
        self.steps += 1
        return self._inner.step(x, y, weight, anchors=anchors)


def test_the_protocol_names_what_the_plugin_calls():
    assert {"decode", "encode", "step", "frozen_decoder", "distribute", "device", "freeze_encoder",
            "encoder_frozen", "holds_latent", "nbytes", "to", "parameters", "shape"} <= set(GENERATOR_MEMBERS)


def test_a_generator_missing_members_is_refused_naming_them(make_ali):
    inner = ALIGenerator(make_ali(conditional=True), replay_optim())
    with pytest.raises(ConfigError, match="Delegating lacks device, distribute"):
        ALIReplayPlugin(Delegating(inner, leave_out=("distribute", "device")))


def test_a_complete_generator_of_another_kind_replays(stream, make_ali):
    torch.manual_seed(0)
    generator = Delegating(ALIGenerator(make_ali(conditional=True), replay_optim()))
    plugin = ALIReplayPlugin(generator, source="conditional", replay_size=200, ali_epochs=None, seed=0)
    assert plugin.generator is generator
    run(plugin, stream, experiences=2, epochs=1, recorder=False)
    assert generator.steps > 0 and plugin.last_replay is not None and plugin.nbytes() > 0
