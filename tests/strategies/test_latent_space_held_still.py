"""Holding the ALI's latent space still: the replay code term in the plugin, and the frozen encoder."""
import pytest
import torch
from avalanche.training import Naive

from ali_replay.ali import build_ali
from ali_replay.config import ModelConfig, OptimConfig
from ali_replay.errors import ConfigError
from strategies.ali_replay_plugin import ALIReplayPlugin
from strategies.replay import ALIGenerator, VAEGenerator
from strategies.vae import VAE


# one generator step per solver iteration on whole batches, every replay example kept
UNFILTERED = dict(filter_replay=False, ali_epochs=None, ali_batch_size=None, ali_replay_batch_size=None)


def _strategy(ali, evaluator, **settings):
    """Naive on a tiny solver with an ALIReplayPlugin of class-Gaussian replay, stored labels."""
    plugin = ALIReplayPlugin(ali, **{**UNFILTERED, "source": "class_latent", "labels": "stored", "replay_size": 100,
                                     **settings})
    solver = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    return Naive(model=solver, optimizer=torch.optim.Adam(solver.parameters()), train_mb_size=20,
                 plugins=[plugin], evaluator=evaluator()), plugin


class StepSpy:
    """Wraps a generator's `step` and keeps the anchors of each call (None where it was given none)."""

    def __init__(self, generator):
        self.step, self.anchors = generator.step, []
        generator.step = self

    def __call__(self, x, y, weight, **kwargs):
        self.anchors.append(kwargs.get("anchors"))
        return self.step(x, y, weight, **kwargs)


def test_replay_steps_carry_the_codes_of_the_replay_only_when_the_term_weighs(stream, make_ali, evaluator):
    for weight in (0.0, 2.0):
        torch.manual_seed(0)
        strategy, plugin = _strategy(make_ali(), evaluator, replay_code_weight=weight)
        spy = StepSpy(plugin.generator)
        strategy.train(stream.train_stream[0])
        first = len(spy.anchors)
        assert first and all(a is None for a in spy.anchors)  # nothing to replay yet
        strategy.train(stream.train_stream[1])
        replayed = spy.anchors[first:]
        assert replayed
        if weight == 0:
            assert all(a is None for a in replayed)  # the plain step, as before the setting existed
            continue
        assert all(a is not None and a.code_weight == 2.0 and a.image_weight == 0.0 for a in replayed)
        assert all(a.codes.shape == (20, 4) and a.codes.dtype == torch.float32 for a in replayed)
        assert not plugin.feed.reads_codes  # the image solver still learns the replayed images


@pytest.mark.parametrize("order", ["alternating", "simultaneous"])
def test_a_frozen_encoder_keeps_its_weights_and_the_classes_statistics(stream, make_ali, evaluator, order):
    torch.manual_seed(0)
    ali = make_ali()
    strategy, plugin = _strategy(ali, evaluator, freeze_encoder_after=1, replay_code_weight=1.0,
                                 optim={"update_order": order})
    strategy.train(stream.train_stream[0])
    assert not plugin.generator.encoder_frozen
    encoder = {k: v.clone() for k, v in ali.encoder.state_dict().items()}
    decoder = {k: v.clone() for k, v in ali.decoder.state_dict().items()}
    first = {g: {k: v.clone() for k, v in stats.items()} for g, stats in plugin.source.gaussians.items()}
    for experience in stream.train_stream[1:3]:
        strategy.train(experience)
    assert plugin.generator.encoder_frozen
    assert all(torch.equal(v, encoder[k]) for k, v in ali.encoder.state_dict().items())
    assert any(not torch.equal(v, decoder[k]) for k, v in ali.decoder.state_dict().items())  # it trains on
    assert sorted(plugin.source.gaussians) == list(range(6))
    for g, stats in first.items():  # no refresh: the first classes' Gaussians are as they were fitted
        assert all(torch.equal(plugin.source.gaussians[g][k], v) for k, v in stats.items())


@pytest.mark.parametrize("order", ["alternating", "simultaneous"])
def test_a_frozen_encoder_keeps_its_batchnorm_statistics_too(order):
    torch.manual_seed(0)
    ali = build_ali((1, 28, 28), ModelConfig(preset="conv28", width=0.25, latent_dim=4))
    generator = ALIGenerator(ali, OptimConfig(update_order=order))
    generator.freeze_encoder()
    before = {k: v.clone() for k, v in ali.encoder.state_dict().items()}
    assert any("running_mean" in k for k in before)
    for _ in range(2):
        generator.step(torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long))
    assert all(torch.equal(v, before[k]) for k, v in ali.encoder.state_dict().items())
    assert ali.encoder.training is False and ali.decoder.training is True


@pytest.mark.parametrize("settings", [{"replay_code_weight": 1.0}, {"replay_image_weight": 1.0}])
def test_anchored_replay_steps_need_an_ali_with_an_encoder(settings, make_ali):
    with pytest.raises(ConfigError, match=r"this generator \(ALIGenerator\) cannot hold its latent space still"):
        ALIReplayPlugin(make_ali(encoder=False), source="prior", labels="solver_hard", **settings)
    with pytest.raises(ConfigError, match=r"this generator \(VAEGenerator\) cannot hold its latent space still"):
        ALIReplayPlugin(VAE((1, 8, 8), latent_dim=4, hidden=32), source="prior", labels="solver_hard", **settings)


def test_freezing_needs_an_encoder(make_ali):
    with pytest.raises(ConfigError, match="has none; set freeze_encoder_after=null"):
        ALIReplayPlugin(make_ali(encoder=False), source="prior", labels="solver_hard", freeze_encoder_after=1)


def test_a_frozen_vae_encoder_keeps_its_weights_and_statistics_while_its_decoder_learns():
    torch.manual_seed(0)
    vae = VAE((1, 28, 28), latent_dim=4)
    generator = VAEGenerator(vae)
    generator.freeze_encoder()
    coder = [vae.encoder, vae.calc_mean, vae.calc_logvar]
    before = [{k: v.clone() for k, v in part.state_dict().items()} for part in coder]
    decoder_before = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    assert any("running_mean" in k for k in before[0])
    for _ in range(2):
        generator.step(torch.rand(8, 1, 28, 28))
    assert all(torch.equal(v, b[k]) for part, b in zip(coder, before) for k, v in part.state_dict().items())
    assert any(not torch.equal(v, decoder_before[k]) for k, v in vae.decoder.state_dict().items())
    assert generator.encoder_frozen and vae.encoder.training is False and vae.decoder.training is True


@pytest.mark.parametrize("settings,message", [({"replay_code_weight": -1.0}, "'replay_code_weight': must be >= 0"),
                                              ({"replay_image_weight": -1.0}, "'replay_image_weight': must be >= 0"),
                                              ({"freeze_encoder_after": -1}, "'freeze_encoder_after': must be >= 0")])
def test_out_of_range_settings_are_refused(settings, message, make_ali):
    with pytest.raises(ConfigError, match=message):
        ALIReplayPlugin(make_ali(), **settings)
