"""dgr: the replay plugin with a VAE as its generator, plain generative replay in the same machinery."""
import torch
from omegaconf import OmegaConf

from ali_replay.data import load_dataset
from strategies import build_strategy, load_strategy_params
from strategies.replay import VAEGenerator, replay_fields
from strategies.vae import VAE


def _negative_elbo(generator, x):
    """The VAE's mean loss on fixed images, in eval mode (posterior means, no sampling noise)."""
    with torch.no_grad():
        vae = generator.vae.eval()
        mean, logvar = vae.encode(x)
        rec = torch.nn.functional.binary_cross_entropy(vae.decode(mean), x, reduction="none").flatten(1).sum(1)
        kl = -0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum(1)
        return float((rec + kl).mean())


def test_vae_generator_steps_lower_its_loss_on_real_digits():
    torch.manual_seed(0)
    x = load_dataset("digits").train.float_images()[:256]
    generator = VAEGenerator(VAE((1, 8, 8), latent_dim=4, hidden=64))
    before = _negative_elbo(generator, x)
    for _ in range(200):
        stats = generator.step(x[torch.randint(0, len(x), (64,))])
    assert _negative_elbo(generator, x) < 0.8 * before
    assert set(stats) == {"loss", "reconstruction", "kl"}
    codes = generator.encode(x[:10])
    images = generator.decode(codes)
    assert codes.shape == (10, 4) and images.shape == (10, 1, 8, 8)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0 and not images.requires_grad
    assert torch.equal(generator.frozen_decoder()(codes, None), images)


def test_dgr_differs_from_ali_replay_at_prior_only_by_its_generator(stream, make_solver, make_context):
    same = [k for k in replay_fields() if k != "optim"]
    for dgr_spec, ali_spec in (("dgr@unfiltered", "ali_replay@prior"), ("dgr", "ali_replay+source=prior"),
                               ("dgr@filtered", "ali_replay@filtered+source=prior")):
        _, dgr = load_strategy_params(dgr_spec)
        _, ali = load_strategy_params(ali_spec)
        assert {k: dgr[k] for k in same} == {k: ali[k] for k in same}, (dgr_spec, ali_spec)

    torch.manual_seed(0)
    strategy = build_strategy("dgr", make_solver(), {"model": {"hidden": 32, "latent_dim": 4}}, make_context())
    plugin = next(p for p in strategy.plugins if type(p).__name__ == "ALIReplayPlugin")
    assert isinstance(plugin.generator, VAEGenerator) and plugin.ali is None
    vae_before = {k: v.clone() for k, v in plugin.generator.vae.state_dict().items()}
    for experience in stream.train_stream[:2]:
        strategy.train(experience)
    assert any(not torch.equal(v, vae_before[k]) for k, v in plugin.generator.vae.state_dict().items())
    images, labels = plugin.last_replay  # prior samples, labelled by the previous solver among digits 0 and 1
    assert images.shape[1:] == (1, 8, 8) and set(labels.tolist()) <= {0, 1}
    assert plugin.replay is None and plugin.config.source == "prior"
    assert OmegaConf.structured(plugin.config.optim).lr_g == 1e-3


def test_the_plugin_given_a_vae_and_the_dgr_recipe_is_the_registrys_dgr(make_solver, make_context):
    from strategies import ALIReplayPlugin
    from strategies.replay import DGRRecipe
    plugin = ALIReplayPlugin(VAE((1, 28, 28), latent_dim=4, hidden=32), DGRRecipe())
    strategy = build_strategy("dgr", make_solver(), {"model": {"hidden": 32, "latent_dim": 4}},
                              make_context(input_shape=(1, 28, 28), generator_epochs=None))  # built, not trained
    built = next(p for p in strategy.plugins if isinstance(p, ALIReplayPlugin))
    assert built.config == plugin.config and plugin.config.optim.beta1 == 0.9


def test_dgr_at_features_is_ali_replay_at_features_with_the_vae(stream, make_solver, make_context):
    """The code-space recipe of both families: the same replay settings, a head on each generator's codes."""
    from strategies import LatentSolver
    from strategies.replay import ClassGaussianSource
    same = [k for k in replay_fields() if k != "optim"] + ["solver_input", "latent_head_width"]
    _, dgr = load_strategy_params("dgr@features")
    _, ali = load_strategy_params("ali_replay@features")
    assert {k: dgr[k] for k in same} == {k: ali[k] for k in same}
    assert dgr["model"]["latent_dim"] == ali["model"]["latent_dim"] == 64

    torch.manual_seed(0)
    strategy = build_strategy("dgr@features", make_solver(), {"model": {"hidden": 32, "latent_dim": 4},
                                                               "replay_size": 200}, make_context())
    model = strategy.model
    plugin = next(p for p in strategy.plugins if type(p).__name__ == "ALIReplayPlugin")
    vae = plugin.generator.vae
    assert isinstance(model, LatentSolver) and model.coder is vae and model.head[0].in_features == 4
    assert {id(p) for g in strategy.optimizer.param_groups for p in g["params"]} == \
        {id(p) for p in model.head.parameters()}
    strategy.train(stream.train_stream[0])
    coder = {k: v.clone() for k, v in vae.encoder.state_dict().items()}
    decoder = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    strategy.train(stream.train_stream[1])
    assert plugin.generator.encoder_frozen and isinstance(plugin.source, ClassGaussianSource)
    assert all(torch.equal(v, coder[k]) for k, v in vae.encoder.state_dict().items())  # frozen after the first
    assert all(torch.equal(v, decoder[k]) for k, v in vae.decoder.state_dict().items())  # and idle from then on
    assert plugin.replay is None and plugin.feed.reads_codes
    x = stream.train_stream[0].dataset[0][0][None]
    with torch.no_grad():
        vae.eval()
        assert torch.allclose(model(x), model.head(vae.encode(x)[0]), atol=1e-6)  # the head on posterior means


def test_dgr_at_features_beats_naive_on_split_digits(stream_factory, make_solver, make_context, stream_accuracy,
                                                     trained):
    """About 10 s: 5 experiences of 280 images, the VAE's code head against no replay."""
    stream = stream_factory(per_class=140)
    small = {"model": {"hidden": 128, "latent_dim": 8}, "replay_size": 2000}
    features = "dgr@features+freeze_encoder_after=2"  # as the ALI's test freezes it
    final = {}
    for spec, params in (("naive", None), (features, small)):
        strategy = trained(spec, make_solver, params, make_context(train_epochs=10, generator_epochs=10), stream)
        final[spec] = stream_accuracy(strategy.model, stream.test_stream)
    assert final[features] >= final["naive"] + 0.3, final
