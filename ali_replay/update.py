"""One ALI update (`train_step`): encode, decode, score both joint pairs, two losses, two optimizer steps.

Only the step lives here. The loops around it are elsewhere: `ali_replay.trainer` trains a
standalone ALI (epochs, checkpoints, pictures); `strategies.ali_training.ALITraining` runs it
as an Avalanche generator strategy; `strategies.replay.ALIGenerator` steps it inside replay.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ali_replay.ali import ALI
from ali_replay.errors import ConfigError, ShapeError
from ali_replay.losses import cycle_loss, discriminator_loss, generator_loss
from ali_replay.runtime import compute_precision


@dataclass
class ReplayAnchors:
    """Replayed examples of a batch with the codes they were decoded from: the ALI's sleep-phase fantasies.

    The last `len(codes)` rows of the batch `train_step` is given are images the decoder
    made of `codes` when the replay was made (before the experience, so they stay fixed
    through it), on the batch's device. Two terms, each an L1 error averaged over those
    rows, join the encoder/decoder loss:

    `code_weight` * |mean G_z(x_r) - z_r|: the encoder keeps inverting the decoder where the
    old classes' codes were drawn (a Helmholtz machine's sleep phase), so the old classes'
    images keep their codes while the ALI learns new ones. The images are fixed data, not
    the decoder's output: only the encoder moves under this term.

    `image_weight` * |G_x(z_r) - x_r|: the decoder keeps drawing those codes as the decoder
    that made the replay did (a distillation of the previous decoder); only the decoder moves.

    L1, as the ALICE cycle terms (so that the weights compare with `cycle_z`'s): replay drawn
    in a class Gaussian's tails decodes into ambiguous images whose codes the encoder cannot
    recover, and a squared error would let those few dominate the step.
    """

    codes: torch.Tensor
    code_weight: float = 0.0
    image_weight: float = 0.0


@dataclass
class ALIOptimizers:
    """The discriminator's Adam and the encoder/decoder's Adam: two players, two optimizers."""

    d: torch.optim.Optimizer
    g: torch.optim.Optimizer

    def state_dict(self) -> dict:
        """Both optimizers' states."""
        return {"d": self.d.state_dict(), "g": self.g.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore both optimizers' states."""
        self.d.load_state_dict(state["d"])
        self.g.load_state_dict(state["g"])


def make_optimizers(ali: ALI, optim_cfg) -> ALIOptimizers:
    """Adam for D and Adam for (G_z, G_x), with the configured learning rates and betas."""
    betas = (optim_cfg.beta1, optim_cfg.beta2)
    g_params = list(ali.decoder.parameters())
    if ali.encoder is not None:
        g_params += list(ali.encoder.parameters())
    return ALIOptimizers(
        d=torch.optim.Adam(ali.discriminator.parameters(), lr=optim_cfg.lr_d, betas=betas),
        g=torch.optim.Adam(g_params, lr=optim_cfg.lr_g, betas=betas),
    )


class Players(nn.Module):
    """The encoder and decoder as one module, so that one update is one forward and one backward.

    That is the shape DistributedDataParallel needs; on one process it is a plain view of the ALI.
    """

    def __init__(self, ali: ALI):
        super().__init__()
        self.encoder, self.decoder = ali.encoder, ali.decoder

    def forward(self, x: torch.Tensor, z: torch.Tensor, y: Optional[torch.Tensor], round_trip_x: bool,
                round_trip_z: bool, anchor_codes: Optional[torch.Tensor] = None):
        """Encode x, decode z, and (when asked) take each back through the other network.

        Also the posterior means of x, and the decoder's images of `anchor_codes` (the codes
        the batch's last rows were decoded from; None: not asked for).
        """
        z_hat, z_mean = self.encoder.sample_with_mean(x, y)  # the pair (x, G_z(x))
        x_tilde = self.decoder(z, y)  # the pair (G_x(z), z)
        x_rec = self.decoder(z_hat, y) if round_trip_x else None
        z_rec = self.encoder(x_tilde, y)[0] if round_trip_z else None
        x_anchor = None
        if anchor_codes is not None:
            x_anchor = self.decoder(anchor_codes, None if y is None else y[len(y) - len(anchor_codes):])
        return z_hat, z_mean, x_tilde, x_rec, z_rec, x_anchor


UPDATE_ORDERS = ("alternating", "simultaneous")
PRECISIONS = ("float32", "bfloat16", "auto")  # auto: bfloat16 where the device has bf16 units


def check_update_order(order: str, distributed: bool = False) -> str:
    """`order` if it is a known update order usable here, else a ConfigError naming the fix."""
    if order not in UPDATE_ORDERS:
        raise ConfigError(f"unknown optim.update_order '{order}'; valid values: {', '.join(UPDATE_ORDERS)}")
    if order == "simultaneous" and distributed:
        raise ConfigError("optim.update_order=simultaneous is for one process; distributed training needs "
                          "optim.update_order=alternating")
    return order


def check_precision(precision: str) -> str:
    """`precision` if it is a known compute precision, else a ConfigError naming the valid ones."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown optim.precision '{precision}'; valid values: {', '.join(PRECISIONS)}")
    return precision


def check_optim(optim_cfg, distributed: bool = False) -> None:
    """Validate an OptimConfig's update order and precision before any training starts."""
    check_update_order(optim_cfg.update_order, distributed)
    check_precision(optim_cfg.precision)


def _forward_precision(x: torch.Tensor, precision: str):
    """The context the forward passes run in: bf16 autocast on x's device, or nothing."""
    return torch.autocast(x.device.type, dtype=torch.bfloat16,
                          enabled=compute_precision(precision, x.device.type) == "bfloat16")


def train_step(ali: ALI, optimizers: ALIOptimizers, optim_cfg, x: torch.Tensor, y: Optional[torch.Tensor] = None,
               weight: Optional[torch.Tensor] = None, players: Optional[nn.Module] = None,
               discriminator: Optional[nn.Module] = None, anchors: Optional[ReplayAnchors] = None
               ) -> dict[str, torch.Tensor]:
    """One update of the ALI (an encoder-free model: of the GAN) on a batch, as `optim_cfg` says; detached losses.

    `optim_cfg` is an `OptimConfig` (or a config with its fields): the cycle weights, the
    update order and the precision are read from it; the learning rates live in `optimizers`.
    `weight` (one value per example) weights the real pairs, so that replayed and current
    examples can count differently. `players` and `discriminator` default to the ALI's own
    networks; distributed training passes them wrapped in DistributedDataParallel.
    `anchors` (replayed rows with the codes they were decoded from) add the terms
    `ReplayAnchors` describes; None, or both weights 0: the update is the plain one.
    """
    check_update_order(optim_cfg.update_order, distributed=players is not None or discriminator is not None)
    check_precision(optim_cfg.precision)
    y = y if ali.conditional else None
    anchors = _check_anchors(ali, x, anchors)
    if ali.encoder is None:
        return gan_step(ali, optimizers, optim_cfg, x, y, weight, players, discriminator)
    if optim_cfg.update_order == "simultaneous":
        return simultaneous_step(ali, optimizers, optim_cfg, x, y, weight, anchors)
    return alternating_step(ali, optimizers, optim_cfg, x, y, weight, players, discriminator, anchors)


def _check_anchors(ali: ALI, x: torch.Tensor, anchors: Optional[ReplayAnchors]) -> Optional[ReplayAnchors]:
    """`anchors` when they weigh anything (else None), checked against the ALI and the batch."""
    if anchors is None or not (anchors.code_weight or anchors.image_weight):
        return None
    if ali.encoder is None:
        raise ConfigError("replay anchors need an ALI with an encoder (the code term reads G_z); an encoder-free "
                          "GAN trains without them: set replay_code_weight=0 and replay_image_weight=0")
    codes = anchors.codes
    if codes.ndim != 2 or codes.shape[1] != ali.latent_dim or len(codes) > len(x):
        raise ShapeError(f"replay anchors must be codes of shape (k, {ali.latent_dim}) for the last k <= {len(x)} "
                         f"rows of the batch, got {tuple(codes.shape)}")
    return anchors


def alternating_step(ali: ALI, optimizers: ALIOptimizers, optim_cfg, x: torch.Tensor, y: Optional[torch.Tensor],
                     weight: Optional[torch.Tensor] = None, players: Optional[nn.Module] = None,
                     discriminator: Optional[nn.Module] = None, anchors: Optional[ReplayAnchors] = None
                     ) -> dict[str, torch.Tensor]:
    """D steps on both joint pairs, then the encoder and decoder step against the updated D."""
    players = players or Players(ali)
    discriminator = discriminator or ali.discriminator
    n, pair_y = x.shape[0], _pair_labels(y)
    z, z_hat, x_tilde, x_rec, z_rec, anchored = _encode_and_decode(ali, players, optim_cfg, x, y, anchors)

    # (1) Update D: tell encoder pairs (x, G_z(x)) from decoder pairs (G_x(z), z), both in one pass.
    with _forward_precision(x, optim_cfg.precision):
        logits = discriminator(torch.cat([x, x_tilde.detach()]), torch.cat([z_hat.detach(), z]), pair_y)
        real, fake = logits[:n], logits[n:]
        loss_d = discriminator_loss(real, fake, weight)
    optimizers.d.zero_grad(set_to_none=True)
    loss_d.backward()
    optimizers.d.step()

    # (2) Update the encoder and decoder: fool the updated D, and stay each other's inverse.
    ali.discriminator.requires_grad_(False)  # no parameter gradients for D in this step
    with _forward_precision(x, optim_cfg.precision):
        logits = ali.discriminator(torch.cat([x, x_tilde]), torch.cat([z_hat, z]), pair_y)
        loss_adv = generator_loss(logits[:n], logits[n:], weight)
        cycles = {**_cycle_terms(x, z, x_rec, z_rec, weight), **anchored}
        loss_g = loss_adv + _weighted_cycles(cycles, optim_cfg, anchors)
    optimizers.g.zero_grad(set_to_none=True)
    loss_g.backward()
    optimizers.g.step()
    ali.discriminator.requires_grad_(True)
    return _statistics(loss_d, loss_adv, real, fake, cycles)


def simultaneous_step(ali: ALI, optimizers: ALIOptimizers, optim_cfg, x: torch.Tensor, y: Optional[torch.Tensor],
                      weight: Optional[torch.Tensor] = None, anchors: Optional[ReplayAnchors] = None
                      ) -> dict[str, torch.Tensor]:
    """Both players' losses from one D pass, as the ALI authors' code does; each gradient reaches its own weights.

    One discriminator forward fewer than `alternating_step` (BENCHMARKS.md, "Training
    speed"); the encoder and decoder are scored by the discriminator before its step.
    """
    n, pair_y = x.shape[0], _pair_labels(y)
    z, z_hat, x_tilde, x_rec, z_rec, anchored = _encode_and_decode(ali, Players(ali), optim_cfg, x, y, anchors)
    with _forward_precision(x, optim_cfg.precision):
        logits = ali.discriminator(torch.cat([x, x_tilde]), torch.cat([z_hat, z]), pair_y)
        real, fake = logits[:n], logits[n:]
        loss_d = discriminator_loss(real, fake, weight)
        loss_adv = generator_loss(real, fake, weight)
        cycles = {**_cycle_terms(x, z, x_rec, z_rec, weight), **anchored}
        loss_g = loss_adv + _weighted_cycles(cycles, optim_cfg, anchors)

    # (1) and (2) together: D's gradient from loss_d, the encoder's and decoder's from loss_g
    # (a frozen encoder's parameters need none).
    d_params = [p for group in optimizers.d.param_groups for p in group["params"]]
    g_params = [p for group in optimizers.g.param_groups for p in group["params"] if p.requires_grad]
    optimizers.d.zero_grad(set_to_none=True)
    optimizers.g.zero_grad(set_to_none=True)
    loss_d.backward(inputs=d_params, retain_graph=True)
    loss_g.backward(inputs=g_params)
    optimizers.d.step()
    optimizers.g.step()
    return _statistics(loss_d, loss_adv, real, fake, cycles)


def gan_step(gan: ALI, optimizers: ALIOptimizers, optim_cfg, x: torch.Tensor, y: Optional[torch.Tensor],
             weight: Optional[torch.Tensor] = None, decoder: Optional[nn.Module] = None,
             discriminator: Optional[nn.Module] = None) -> dict[str, torch.Tensor]:
    """The encoder-free model: the same decoder and x-pathway of D, a plain GAN update (no cycle terms)."""
    decoder = decoder or gan.decoder
    discriminator = discriminator or gan.discriminator
    n, pair_y = x.shape[0], _pair_labels(y)

    # (1) Update D: real images against decoded prior codes, both in one pass.
    with _forward_precision(x, optim_cfg.precision):
        x_fake = decoder(gan.prior(n), y)
        logits = discriminator(torch.cat([x, x_fake.detach()]), None, pair_y)
        real, fake = logits[:n], logits[n:]
        loss_d = discriminator_loss(real, fake, weight)
    optimizers.d.zero_grad(set_to_none=True)
    loss_d.backward()
    optimizers.d.step()

    # (2) Update the decoder: fool the updated D.
    gan.discriminator.requires_grad_(False)
    with _forward_precision(x, optim_cfg.precision):
        loss_g = F.softplus(-gan.discriminator(x_fake, None, y)).mean()
    optimizers.g.zero_grad(set_to_none=True)
    loss_g.backward()
    optimizers.g.step()
    gan.discriminator.requires_grad_(True)
    return _statistics(loss_d, loss_g, real, fake)


def _encode_and_decode(ali: ALI, players: nn.Module, optim_cfg, x: torch.Tensor, y: Optional[torch.Tensor],
                       anchors: Optional[ReplayAnchors] = None):
    """Prior codes z, then (in one players pass) G_z(x), G_x(z), the round trips the cycle terms compare,
    and the replay anchors' errors (`_anchor_terms`)."""
    z = ali.prior(x.shape[0])
    anchor_codes = anchors.codes if anchors is not None and anchors.image_weight else None
    with _forward_precision(x, optim_cfg.precision):
        z_hat, z_mean, x_tilde, x_rec, z_rec, x_anchor = players(x, z, y, bool(optim_cfg.cycle_x),
                                                                 bool(optim_cfg.cycle_z), anchor_codes)
        anchored = _anchor_terms(x, z_mean, x_anchor, anchors)
    return z, z_hat, x_tilde, x_rec, z_rec, anchored


def _anchor_terms(x: torch.Tensor, z_mean: torch.Tensor, x_anchor: Optional[torch.Tensor],
                  anchors: Optional[ReplayAnchors]) -> dict[str, torch.Tensor]:
    """The replay anchors' L1 errors (see `ReplayAnchors`): codes of the replayed images, images of their codes."""
    if anchors is None:
        return {}
    terms, start = {}, len(x) - len(anchors.codes)  # the replayed rows are the batch's last
    if anchors.code_weight:
        terms["replay_code"] = cycle_loss(anchors.codes, z_mean[start:])
    if x_anchor is not None:
        terms["replay_image"] = cycle_loss(x[start:], x_anchor)
    return terms


def _pair_labels(y: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The labels of a batch of real pairs followed by as many fake pairs (None: unconditional)."""
    return None if y is None else torch.cat([y, y])


def _cycle_terms(x: torch.Tensor, z: torch.Tensor, x_rec: Optional[torch.Tensor], z_rec: Optional[torch.Tensor],
                 weight: Optional[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ALICE reconstruction errors of the round trips that were taken (None: not asked for)."""
    terms = {}
    if x_rec is not None:
        terms["cycle_x"] = cycle_loss(x, x_rec, weight)
    if z_rec is not None:
        terms["cycle_z"] = cycle_loss(z, z_rec)
    return terms


def _weighted_cycles(cycles: dict[str, torch.Tensor], optim_cfg, anchors: Optional[ReplayAnchors] = None):
    """The cycle terms' (and the replay anchors') contribution to the encoder/decoder loss."""
    total = optim_cfg.cycle_x * cycles.get("cycle_x", 0.0) + optim_cfg.cycle_z * cycles.get("cycle_z", 0.0)
    if anchors is not None:
        total = total + anchors.code_weight * cycles.get("replay_code", 0.0) \
            + anchors.image_weight * cycles.get("replay_image", 0.0)
    return total


def _statistics(loss_d: torch.Tensor, loss_g: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                cycles: Optional[dict[str, torch.Tensor]] = None) -> dict[str, torch.Tensor]:
    """What one update reports, detached: both losses, D's mean belief in real and fake pairs, the cycle terms."""
    stats = dict(cycles or {})
    stats.update(loss_d=loss_d, loss_g=loss_g, d_real=torch.sigmoid(real).mean(), d_fake=torch.sigmoid(fake).mean())
    return {k: v.detach() for k, v in stats.items()}
