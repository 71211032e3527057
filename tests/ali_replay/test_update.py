"""The ALI update on real digits: it learns, and it touches the right parameters."""
import copy

import pytest
import torch

from ali_replay.ali import build_ali
from ali_replay.config import ModelConfig, OptimConfig
from ali_replay.data import load_dataset
from ali_replay.losses import discriminator_loss
from ali_replay.runtime import evaluating
from ali_replay import update
from ali_replay.update import ReplayAnchors, make_optimizers, train_step


@pytest.fixture(scope="module")
def digits_batch():
    data = load_dataset("digits")
    return data.train.float_images()[:64], data.train.targets[:64]


def _fixed_d_loss(ali, x, z):
    """The discriminator loss on fixed data and codes, in eval mode (no dropout noise)."""
    with evaluating(ali):
        real = ali.discriminator(x, ali.encode(x))
        fake = ali.discriminator(ali.decode(z), z)
        return discriminator_loss(real, fake).item()


@pytest.mark.parametrize("order", ["alternating", "simultaneous"])
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_steps_lower_the_discriminator_loss_on_a_fixed_batch(digits_batch, order, precision):
    torch.manual_seed(0)
    x, _ = digits_batch
    ali = build_ali((1, 8, 8), ModelConfig(preset="mlp", hidden=128, latent_dim=8))
    cfg = OptimConfig(lr_d=2e-4, lr_g=2e-4, update_order=order, precision=precision)
    opt = make_optimizers(ali, cfg)
    z = torch.randn(64, 8)
    before = _fixed_d_loss(ali, x, z)
    for _ in range(30):
        stats = train_step(ali, opt, cfg, x)
    after = _fixed_d_loss(ali, x, z)
    assert before == pytest.approx(2 * torch.log(torch.tensor(2.0)).item(), abs=0.05)
    assert after < before - 0.2
    assert set(stats) == {"loss_d", "loss_g", "d_real", "d_fake", "cycle_x", "cycle_z"}
    assert all(torch.isfinite(v) for v in stats.values())
    # bf16 runs the forward passes only: weights and their gradients stay float32, none frozen.
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 and p.requires_grad
               for p in ali.parameters())


def test_each_player_moves_and_discriminator_gradients_are_restored(digits_batch):
    torch.manual_seed(0)
    x, y = digits_batch
    ali = build_ali((1, 8, 8), ModelConfig(preset="mlp", hidden=64, latent_dim=8, conditional=True), num_classes=10)
    opt = make_optimizers(ali, OptimConfig())
    snapshot = {k: v.clone() for k, v in ali.state_dict().items()}
    train_step(ali, opt, OptimConfig(), x, y)
    for part in ("encoder", "decoder", "discriminator"):
        changed = [not torch.equal(v, snapshot[k]) for k, v in ali.state_dict().items()
                   if k.startswith(part) and v.is_floating_point() and "running" not in k]
        assert any(changed), part
    assert all(p.requires_grad for p in ali.discriminator.parameters())
    # The two optimizers own disjoint parameter sets.
    d_ids = {id(p) for g in opt.d.param_groups for p in g["params"]}
    g_ids = {id(p) for g in opt.g.param_groups for p in g["params"]}
    assert not d_ids & g_ids
    assert d_ids == {id(p) for p in ali.discriminator.parameters()}


def test_cycle_term_lowers_reconstruction_error():
    x = load_dataset("digits").train.float_images()
    errors = {}
    for cycle in (0.0, 30.0):
        torch.manual_seed(0)
        ali = build_ali((1, 8, 8), ModelConfig(preset="mlp", hidden=128, latent_dim=16))
        cfg = OptimConfig(lr_d=2e-4, lr_g=2e-4, cycle_x=cycle, cycle_z=cycle / 10)
        opt = make_optimizers(ali, cfg)
        for _ in range(500):
            train_step(ali, opt, cfg, x[torch.randint(0, len(x), (64,))])
        ali.eval()
        with torch.no_grad():
            errors[cycle] = (ali.reconstruct(x) - x).abs().mean().item()
    assert errors[30.0] < 0.8 * errors[0.0]


def test_gan_step_trains_decoder_only(digits_batch):
    torch.manual_seed(0)
    x, _ = digits_batch
    gan = build_ali((1, 8, 8), ModelConfig(preset="mlp", hidden=64, latent_dim=8), encoder=False)
    opt = make_optimizers(gan, OptimConfig())
    stats = train_step(gan, opt, OptimConfig(), x)
    assert set(stats) == {"loss_d", "loss_g", "d_real", "d_fake"}
    assert torch.isfinite(stats["loss_d"])


def test_simultaneous_update_scores_both_players_on_one_discriminator_pass(digits_batch):
    """The discriminator's step is the alternating one; the encoder and decoder see the pre-update D."""
    x, y = digits_batch
    cfg = ModelConfig(preset="mlp", hidden=64, latent_dim=8, conditional=True, dropout=0.0)
    after = {}
    for order in ("alternating", "simultaneous"):
        torch.manual_seed(0)
        ali = build_ali((1, 8, 8), cfg, num_classes=10)
        opt = make_optimizers(ali, OptimConfig())
        torch.manual_seed(1)
        stats = train_step(ali, opt, OptimConfig(update_order=order), x, y)
        after[order] = ({k: v.clone() for k, v in ali.state_dict().items()}, stats)
    (alt, alt_stats), (sim, sim_stats) = after["alternating"], after["simultaneous"]
    assert float(sim_stats["loss_d"]) == pytest.approx(float(alt_stats["loss_d"]), rel=1e-6)
    assert all(torch.allclose(sim[k], alt[k], atol=1e-7) for k in alt if k.startswith("discriminator"))
    moved = [k for k in alt if k.startswith(("encoder", "decoder")) and alt[k].is_floating_point()
             and not torch.allclose(sim[k], alt[k], atol=1e-7)]
    assert moved  # the players were scored by different discriminators


def test_unknown_update_order_or_precision_and_distributed_simultaneous_are_refused(digits_batch):
    from ali_replay.errors import ConfigError
    from ali_replay.update import check_update_order
    x, _ = digits_batch
    ali = build_ali((1, 8, 8), ModelConfig(preset="mlp", hidden=32, latent_dim=4))
    opt = make_optimizers(ali, OptimConfig())
    with pytest.raises(ConfigError, match="update_order.*alternating, simultaneous"):
        train_step(ali, opt, OptimConfig(update_order="jacobi"), x)
    with pytest.raises(ConfigError, match="optim.precision.*float32, bfloat16"):
        train_step(ali, opt, OptimConfig(precision="float8"), x)
    with pytest.raises(ConfigError, match="distributed.*update_order=alternating"):
        check_update_order("simultaneous", distributed=True)




def _replay_batch(x, ali, n=32):
    """Real images, then images the ALI decodes from n codes (in eval mode): a batch and its anchors' codes."""
    codes = torch.randn(n, ali.latent_dim)
    with evaluating(ali), torch.no_grad():
        replayed = ali.decode(codes)
    return torch.cat([x[:n], replayed]), codes


@pytest.mark.parametrize("order", ["alternating", "simultaneous"])
def test_replay_anchors_of_weight_zero_leave_the_update_as_it_was(digits_batch, order):
    x, _ = digits_batch
    torch.manual_seed(0)
    ali = build_ali((1, 8, 8), ModelConfig(preset="mlp", hidden=64, latent_dim=8))
    batch, codes = _replay_batch(x, ali)
    cfg = OptimConfig(update_order=order)
    after = []
    for anchors in (None, ReplayAnchors(codes, code_weight=0.0, image_weight=0.0)):
        model = copy.deepcopy(ali)
        opt = make_optimizers(model, cfg)
        torch.manual_seed(1)
        for _ in range(3):
            stats = train_step(model, opt, cfg, batch, anchors=anchors)
        after.append((model.state_dict(), set(stats)))
    (plain, plain_stats), (zero, zero_stats) = after
    assert all(torch.equal(plain[k], zero[k]) for k in plain)  # bit for bit
    assert plain_stats == zero_stats == {"loss_d", "loss_g", "d_real", "d_fake", "cycle_x", "cycle_z"}


def test_the_replay_code_term_brings_replayed_codes_back():
    """Steps with the term pull G_z(x_r) to z_r, well beyond what the same steps without it do."""
    x = load_dataset("digits").train.float_images()
    torch.manual_seed(0)
    ali = build_ali((1, 8, 8), ModelConfig(preset="mlp", hidden=64, latent_dim=8))
    cfg = OptimConfig(lr_d=1e-3, lr_g=1e-3, cycle_x=10.0)
    opt = make_optimizers(ali, cfg)
    for _ in range(200):  # a decoder whose images differ from code to code
        train_step(ali, opt, cfg, x[torch.randint(0, len(x), (64,))])
    batch, codes = _replay_batch(x, ali)
    replayed = batch[32:]

    def round_trip_error(model):
        with evaluating(model), torch.no_grad():
            return float((model.encode(replayed) - codes).abs().mean())

    errors = {}
    for weight in (0.0, 10.0):
        model = copy.deepcopy(ali)
        opt = make_optimizers(model, cfg)
        torch.manual_seed(1)
        for _ in range(20):
            stats = train_step(model, opt, cfg, batch, anchors=ReplayAnchors(codes, code_weight=weight))
        errors[weight] = round_trip_error(model)
    assert "replay_code" in stats and "replay_image" not in stats
    # Seed 0: 0.77 before, 0.63 after 20 steps without the term, 0.53 with it.
    assert errors[10.0] < 0.75 * round_trip_error(ali)
    assert errors[10.0] < errors[0.0] - 0.05


def test_each_replay_term_moves_one_player(digits_batch):
    """The code term reaches the encoder only (the replayed images are data); the image term the decoder only."""
    x, _ = digits_batch
    torch.manual_seed(0)
    ali = build_ali((1, 8, 8), ModelConfig(preset="mlp", hidden=64, latent_dim=8))
    batch, codes = _replay_batch(x, ali)
    anchors = ReplayAnchors(codes, code_weight=1.0, image_weight=1.0)
    *_, anchored = update._encode_and_decode(ali, update.Players(ali), OptimConfig(), batch, None, anchors)
    for term, moved, still in (("replay_code", ali.encoder, ali.decoder), ("replay_image", ali.decoder, ali.encoder)):
        ali.zero_grad(set_to_none=True)
        anchored[term].backward(retain_graph=True)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in moved.parameters()), term
        assert all(p.grad is None for p in still.parameters()), term
        assert all(p.grad is None for p in ali.discriminator.parameters()), term


def test_replay_anchors_must_fit_the_batch_and_need_an_encoder(digits_batch):
    from ali_replay.errors import ConfigError, ShapeError
    x, _ = digits_batch
    ali = build_ali((1, 8, 8), ModelConfig(preset="mlp", hidden=32, latent_dim=4))
    opt = make_optimizers(ali, OptimConfig())
    with pytest.raises(ShapeError, match=r"codes of shape \(k, 4\).*got \(8, 5\)"):
        train_step(ali, opt, OptimConfig(), x, anchors=ReplayAnchors(torch.zeros(8, 5), code_weight=1.0))
    with pytest.raises(ShapeError, match=r"last k <= 64 rows"):
        train_step(ali, opt, OptimConfig(), x, anchors=ReplayAnchors(torch.zeros(65, 4), code_weight=1.0))
    gan = build_ali((1, 8, 8), ModelConfig(preset="mlp", hidden=32, latent_dim=4), encoder=False)
    with pytest.raises(ConfigError, match="replay_code_weight=0"):
        train_step(gan, make_optimizers(gan, OptimConfig()), OptimConfig(), x,
                   anchors=ReplayAnchors(torch.zeros(8, 4), image_weight=1.0))
