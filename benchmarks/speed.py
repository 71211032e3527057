"""Training throughput of every ALI preset: the project's trainer against a minimal loop over the same networks.

Run: `ali-replay bench-speed` (or `python -m benchmarks.speed`). The trainer is timed end to end
(data loading, logging, checkpoints and pictures included); the minimal loop only does the updates.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ali_replay.ali import build_ali
from ali_replay.config import load_run_config
from ali_replay.runtime import resolve_device
from ali_replay.trainer import ALITrainer
from ali_replay.update import UPDATE_ORDERS, make_optimizers

log = logging.getLogger(__name__)

# (preset, image shape, latent size): each preset on the data set shape it is meant for.
CASES = [("mlp", (1, 28, 28), 32), ("conv28", (1, 28, 28), 32), ("conv32", (3, 32, 32), 64)]
WARMUP_STEPS = 5  # untimed steps per preset before either measurement


def _write_npz(path: Path, shape, n: int, seed: int = 0) -> None:
    """Random uint8 images in the Keras array layout, so the trainer reads them as a real data set."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    image_shape = (h, w) if c == 1 else (h, w, c)
    np.savez(path, x_train=rng.integers(0, 256, (n, *image_shape), dtype=np.uint8),
             y_train=rng.integers(0, 10, n), x_test=rng.integers(0, 256, (64, *image_shape), dtype=np.uint8),
             y_test=np.arange(64) % 10)


def minimal_loop(model_cfg, optim_cfg, shape, x: torch.Tensor, batch_size: int, device, channels_last: bool,
                 autocast: bool, compile_nets: bool = False) -> float:
    """Images per second of a bare ALI update loop (no logging, no checkpoints).

    It follows `optim_cfg.update_order`: alternating (the discriminator steps, then the
    encoder and decoder against it) or simultaneous (both from one discriminator pass).
    """
    torch.manual_seed(0)
    ali = build_ali(shape, model_cfg, 10).to(device)
    if channels_last:
        ali = ali.to(memory_format=torch.channels_last)
    opt = make_optimizers(ali, optim_cfg)
    enc, dec, disc = ali.encoder, ali.decoder, ali.discriminator
    if compile_nets:
        enc, dec, disc = torch.compile(enc), torch.compile(dec), torch.compile(disc)
    d_params, g_params = list(ali.discriminator.parameters()), list(dec.parameters()) + list(enc.parameters())
    simultaneous = optim_cfg.update_order == "simultaneous"
    steps = len(x) // batch_size
    dtype = torch.bfloat16  # as the trainer's optim.precision=bfloat16, on CPU and CUDA alike
    warmup = min(3, steps - 1) if compile_nets else 0  # compilation happens in the first steps: not timed
    start = time.perf_counter()
    for i in range(steps):
        if i == warmup:
            start = time.perf_counter()
        xb = x[i * batch_size:(i + 1) * batch_size]
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            z = torch.randn(batch_size, ali.latent_dim, device=device)
            mu, log_sigma = enc(xb)
            z_hat = mu + log_sigma.exp() * torch.randn_like(mu)
            x_tilde = dec(z)
            cycles = (optim_cfg.cycle_x * (xb - dec(z_hat)).abs().mean()
                      + optim_cfg.cycle_z * (z - enc(x_tilde)[0]).abs().mean())
            if simultaneous:
                real, fake = disc(xb, z_hat), disc(x_tilde, z)
            else:
                real, fake = disc(xb, z_hat.detach()), disc(x_tilde.detach(), z)
            loss_d = F.softplus(-real).mean() + F.softplus(fake).mean()
        opt.d.zero_grad(set_to_none=True)
        opt.g.zero_grad(set_to_none=True)
        if simultaneous:
            loss_g = F.softplus(real).mean() + F.softplus(-fake).mean() + cycles
            loss_d.backward(inputs=d_params, retain_graph=True)
            loss_g.backward(inputs=g_params)
            opt.d.step()
            opt.g.step()
            continue
        loss_d.backward()
        opt.d.step()
        ali.discriminator.requires_grad_(False)
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            loss_g = F.softplus(disc(xb, z_hat)).mean() + F.softplus(-disc(x_tilde, z)).mean() + cycles
        loss_g.backward()
        opt.g.step()
        ali.discriminator.requires_grad_(True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (steps - warmup) * batch_size / (time.perf_counter() - start)


def trainer_throughput(preset: str, shape, latent: int, n: int, batch_size: int, device: str, workdir: Path,
                       update_order: str = "alternating", autocast: bool = False) -> float:
    """Images per second of `ALITrainer.fit` end to end over one epoch of `n` images."""
    data = workdir / f"{preset}.npz"
    _write_npz(data, shape, n)
    cfg = load_run_config(None, [
        "data.name=npz", f"data.path={data}", f"model.preset={preset}", f"model.latent_dim={latent}",
        "train.epochs=1", f"train.batch_size={batch_size}", f"device={device}", f"output_dir={workdir / preset}",
        f"optim.update_order={update_order}", f"optim.precision={'bfloat16' if autocast else 'float32'}",
        "guard.enabled=false",  # random pixels are no data set: a rollback would time the same epoch twice
    ])
    trainer = ALITrainer(cfg, overwrite=True)
    start = time.perf_counter()
    trainer.fit()
    return trainer.step * batch_size / (time.perf_counter() - start)


def run(n: int = 6400, device: str = "auto", threads: int | None = None, channels_last: bool = False,
        autocast: bool = False, compile_nets: bool = False, update_order: str = "alternating") -> list[dict]:
    """Measure every preset; returns one row per preset."""
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    defaults = load_run_config(None, [f"optim.update_order={update_order}"])
    batch_size = defaults.train.batch_size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset, shape, latent in CASES:
            model_cfg = load_run_config(None, [f"model.preset={preset}", f"model.latent_dim={latent}"]).model
            x = torch.rand(n, *shape, device=dev)
            if channels_last and len(shape) == 3:
                x = x.contiguous(memory_format=torch.channels_last)
            # A few untimed steps first: kernel selection (oneDNN, cuDNN) would otherwise land on
            # whichever of the two measurements runs first.
            minimal_loop(model_cfg, defaults.optim, shape, x[:WARMUP_STEPS * batch_size], batch_size, dev,
                         channels_last, autocast)
            trainer_ips = trainer_throughput(preset, shape, latent, n, batch_size, device, Path(tmp), update_order,
                                             autocast)
            loop_ips = minimal_loop(model_cfg, defaults.optim, shape, x, batch_size, dev, channels_last, autocast,
                                    compile_nets)
            rows.append({"preset": preset, "shape": "x".join(map(str, shape)), "batch_size": batch_size,
                         "trainer_ips": trainer_ips, "minimal_ips": loop_ips, "ratio": trainer_ips / loop_ips})
    return rows


def format_rows(rows: list[dict], device: str, threads: int) -> str:
    """A Markdown table of the measurements."""
    lines = [f"device={device} threads={threads}", "",
             "| preset | shape | batch | trainer img/s | minimal loop img/s | trainer / minimal |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['shape']} | {r['batch_size']} | {r['trainer_ips']:.0f} | "
                     f"{r['minimal_ips']:.0f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    """Command-line entry point: print the throughput table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=6400, help="training images per measurement")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--channels-last", action="store_true", help="minimal loop in channels-last layout")
    parser.add_argument("--autocast", action="store_true", help="bf16 autocast in trainer (optim.precision=bfloat16) "
                        "and minimal loop")
    parser.add_argument("--compile", action="store_true", help="minimal loop over torch.compile'd networks "
                        "(its first steps, where compilation happens, are not timed)")
    parser.add_argument("--tf32", action="store_true", help="CUDA only: TensorFloat-32 matrix products and "
                        "convolutions in trainer and minimal loop")
    parser.add_argument("--update-order", choices=UPDATE_ORDERS, default="alternating",
                        help="the ALI update of both trainer and minimal loop (optim.update_order)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.tf32:
        if resolve_device(args.device).type != "cuda":
            parser.error("--tf32 is a CUDA setting (TensorFloat-32 tensor cores); on a CPU use --autocast for bf16")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    rows = run(args.images, args.device, args.threads, args.channels_last, args.autocast, args.compile,
               args.update_order)
    print(format_rows(rows, str(resolve_device(args.device)), torch.get_num_threads()))


if __name__ == "__main__":
    main()
