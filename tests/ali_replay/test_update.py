"""The ALI update on real digits: it learns, and it touches the right parameters."""
import pytest
import torch

from ali_replay.ali import build_ali
from ali_replay.config import ModelConfig, OptimConfig
from ali_replay.data import load_dataset
from ali_replay.losses import discriminator_loss
from ali_replay.runtime import evaluating
from ali_replay.update import make_optimizers, train_step


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


