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
from ali_replay.training import make_optimizers

log = logging.getLogger(__name__)

# (preset, image shape, latent size): each preset on the data set shape it is meant for.
CASES = [("mlp", (1, 28, 28), 32), ("conv28", (1, 28, 28), 32), ("conv32", (3, 32, 32), 64)]


def _write_npz(path: Path, shape, n: int, seed: int = 0) -> None:
    """Random uint8 images in the Keras array layout, so the trainer reads them as a real data set."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    image_shape = (h, w) if c == 1 else (h, w, c)
    np.savez(path, x_train=rng.integers(0, 256, (n, *image_shape), dtype=np.uint8),
             y_train=rng.integers(0, 10, n), x_test=rng.integers(0, 256, (64, *image_shape), dtype=np.uint8),
             y_test=np.arange(64) % 10)


def minimal_loop(model_cfg, optim_cfg, shape, x: torch.Tensor, batch_size: int, device, channels_last: bool,
                 autocast: bool) -> float:
    """Images per second of a bare ALI update loop (no logging, no checkpoints)."""
    torch.manual_seed(0)
    ali = build_ali(shape, model_cfg, 10).to(device)
    if channels_last:
        ali = ali.to(memory_format=torch.channels_last)
    opt = make_optimizers(ali, optim_cfg)
    steps = len(x) // batch_size
    dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    start = time.perf_counter()
    for i in range(steps):
        xb = x[i * batch_size:(i + 1) * batch_size]
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            z = torch.randn(batch_size, ali.latent_dim, device=device)
            mu, log_sigma = ali.encoder(xb)
            z_hat = mu + log_sigma.exp() * torch.randn_like(mu)
            x_tilde = ali.decoder(z)
            real, fake = ali.discriminator(xb, z_hat.detach()), ali.discriminator(x_tilde.detach(), z)
            loss_d = F.softplus(-real).mean() + F.softplus(fake).mean()
        opt.d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt.d.step()
        ali.discriminator.requires_grad_(False)
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            loss_g = F.softplus(ali.discriminator(xb, z_hat)).mean() + F.softplus(-ali.discriminator(x_tilde, z)).mean()
            loss_g = loss_g + optim_cfg.cycle_x * (xb - ali.decoder(z_hat)).abs().mean()
            loss_g = loss_g + optim_cfg.cycle_z * (z - ali.encoder(x_tilde)[0]).abs().mean()
        opt.g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt.g.step()
        ali.discriminator.requires_grad_(True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def trainer_throughput(preset: str, shape, latent: int, n: int, batch_size: int, device: str, workdir: Path) -> float:
    """Images per second of `ALITrainer.fit` end to end over one epoch of `n` images."""
    data = workdir / f"{preset}.npz"
    _write_npz(data, shape, n)
    cfg = load_run_config(None, [
        "data.name=npz", f"data.path={data}", f"model.preset={preset}", f"model.latent_dim={latent}",
        "train.epochs=1", f"train.batch_size={batch_size}", f"device={device}", f"output_dir={workdir / preset}",
    ])
    trainer = ALITrainer(cfg, overwrite=True)
    start = time.perf_counter()
    trainer.fit()
    return trainer.step * batch_size / (time.perf_counter() - start)


def run(n: int = 6400, device: str = "auto", threads: int | None = None, channels_last: bool = False,
        autocast: bool = False) -> list[dict]:
    """Measure every preset; returns one row per preset."""
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    defaults = load_run_config(None, [])
    batch_size = defaults.train.batch_size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset, shape, latent in CASES:
            trainer_ips = trainer_throughput(preset, shape, latent, n, batch_size, device, Path(tmp))
            model_cfg = load_run_config(None, [f"model.preset={preset}", f"model.latent_dim={latent}"]).model
            x = torch.rand(n, *shape, device=dev)
            if channels_last and len(shape) == 3:
                x = x.contiguous(memory_format=torch.channels_last)
            loop_ips = minimal_loop(model_cfg, defaults.optim, shape, x, batch_size, dev, channels_last, autocast)
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
    parser.add_argument("--autocast", action="store_true", help="minimal loop under bf16 (CPU) / fp16 (CUDA) autocast")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = run(args.images, args.device, args.threads, args.channels_last, args.autocast)
    print(format_rows(rows, str(resolve_device(args.device)), torch.get_num_threads()))


if __name__ == "__main__":
    main()
