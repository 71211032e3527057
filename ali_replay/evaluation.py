"""What a trained ALI is worth: reconstruction error, linear probes, and a real-data judge's verdicts."""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from ali_replay.ali import ALI
from ali_replay.data import load_dataset
from ali_replay.errors import ConfigError, ShapeError
from ali_replay.runtime import evaluating

log = logging.getLogger(__name__)


def make_judge(shape, num_classes: int) -> nn.Module:
    """A small classifier for judging images: an MLP for small images, a CNN for 32x32."""
    c, h, w = shape
    if h >= 32:
        return nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(128 * (h // 8) * (w // 8), 256), nn.ReLU(), nn.Linear(256, num_classes),
        )
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 400), nn.ReLU(), nn.Linear(400, 400), nn.ReLU(),
                         nn.Linear(400, num_classes))


def train_judge(x: torch.Tensor, y: torch.Tensor, num_classes: int, epochs: Optional[int] = None,
                batch_size: int = 128, seed: int = 0) -> nn.Module:
    """Fit the judge classifier on real labelled images."""
    if epochs is None:  # at least ~2,000 updates on small sets, 5 passes on large ones
        epochs = min(50, max(5, -(-2000 * batch_size // len(x))))
    torch.manual_seed(seed)
    judge = make_judge(tuple(x.shape[1:]), num_classes).to(x.device)
    opt = torch.optim.Adam(judge.parameters(), lr=1e-3)
    order_rng = torch.Generator().manual_seed(seed)
    judge.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=order_rng).to(x.device)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(judge(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return judge.eval()


@torch.no_grad()
def batched(fn, x: torch.Tensor, y: Optional[torch.Tensor] = None, batch_size: int = 512) -> torch.Tensor:
    """`fn(x_batch, y_batch)` over many examples in batches, concatenated (y may be None)."""
    return torch.cat([fn(x[i:i + batch_size], None if y is None else y[i:i + batch_size])
                      for i in range(0, len(x), batch_size)])


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Arg-max class of a classifier, in batches."""
    return batched(lambda xb, _: model(xb).argmax(1), x, None, batch_size)


def encode_all(ali: ALI, x: torch.Tensor, y: Optional[torch.Tensor] = None, batch_size: int = 512) -> torch.Tensor:
    """Posterior means for many images, in batches."""
    return batched(ali.encode, x, y if ali.conditional else None, batch_size)


def encoder_hidden(ali: ALI, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The encoder's last shared hidden layer (before the label and the latent head), in batches."""
    return batched(lambda xb, _: ali.encoder.trunk(xb), x, None, batch_size)


def reconstruct_all(ali: ALI, x: torch.Tensor, y: Optional[torch.Tensor] = None,
                    batch_size: int = 512) -> torch.Tensor:
    """Reconstructions of many images, in batches."""
    return batched(ali.reconstruct, x, y if ali.conditional else None, batch_size)


def labelled_subset(y: np.ndarray, per_class: Optional[int], cap: Optional[int], seed: int) -> np.ndarray:
    """Indices of `per_class` random examples per class (all when None), at most `cap` in total."""
    rng = np.random.default_rng(seed)
    if per_class is None:
        idx = rng.permutation(len(y))
    else:
        idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)])
    return np.sort(idx[:cap] if cap else idx)


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Test accuracy of a standardised logistic regression."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    probe.fit(train_x, train_y)
    return float(probe.score(test_x, test_y))


def class_histogram(classes: torch.Tensor, num_classes: int) -> dict:
    """Share of each class among predicted labels, the largest share and the entropy (bits) of the shares."""
    if classes.numel() == 0:
        raise ShapeError("class_histogram got no predicted labels; pass at least one")
    counts = torch.bincount(classes.flatten().long().cpu(), minlength=num_classes).double()
    shares = counts / counts.sum()
    nonzero = shares[shares > 0]
    entropy = float(-(nonzero * nonzero.log2()).sum())
    largest = int(shares.argmax())
    return {
        "sample_count": int(counts.sum()),
        "sample_class_hist": shares.tolist(),
        "sample_max_class": largest,
        "sample_max_class_share": float(shares[largest]),
        # log2(num_classes) bits when every class is equally common, 0 when one class takes everything
        "sample_class_entropy_bits": entropy,
        "sample_class_entropy_ratio": entropy / math.log2(num_classes) if num_classes > 1 else 1.0,
    }


def sample_classes(ali: ALI, judge: nn.Module, n: int, seed: int, batch_size: int = 1000) -> torch.Tensor:
    """The judge's labels for `n` images decoded from prior codes drawn with `seed`."""
    if n < 1:
        raise ConfigError(f"eval.n_samples must be a positive number of prior samples (e.g. 10000), got {n}")
    devices = [ali.device] if ali.device.type == "cuda" else []
    # Its own random stream: the figures depend on the seed alone, and callers' draws stay untouched.
    with torch.random.fork_rng(devices=devices), evaluating(ali):
        torch.manual_seed(seed)
        return torch.cat([predict(judge, ali.sample(min(batch_size, n - i)))
                          for i in range(0, n, batch_size)])


def evaluate_ali(ali: ALI, cfg, device: torch.device) -> dict:
    """The eval-ali figures for a trained ALI on its config's data set (`seed` is the config's: the run's own)."""
    started = time.perf_counter()
    data = load_dataset(cfg.data.name, cfg.data.root, cfg.data.download, cfg.data.path)
    ali = ali.to(device).eval()
    x_train, y_train = data.train.float_images().to(device), data.train.targets.to(device)
    x_test, y_test = data.test.float_images().to(device), data.test.targets.to(device)

    recon = reconstruct_all(ali, x_test, y_test)
    mse = F.mse_loss(recon, x_test).item()

    idx = labelled_subset(y_train.cpu().numpy(), cfg.eval.labels_per_class, cfg.eval.probe_train_size, cfg.seed)
    idx_t = torch.as_tensor(idx, device=device)
    z_train = encode_all(ali, x_train[idx_t], y_train[idx_t]).cpu().numpy()
    z_test = encode_all(ali, x_test, y_test).cpu().numpy()
    ytr, yte = y_train[idx_t].cpu().numpy(), y_test.cpu().numpy()
    latent_acc = linear_probe(z_train, ytr, z_test, yte)
    hidden_acc = linear_probe(encoder_hidden(ali, x_train[idx_t]).cpu().numpy(), ytr,
                              encoder_hidden(ali, x_test).cpu().numpy(), yte)
    pixel_acc = linear_probe(x_train[idx_t].flatten(1).cpu().numpy(), ytr, x_test.flatten(1).cpu().numpy(), yte)

    judge = train_judge(x_train, y_train, data.num_classes, seed=cfg.seed)
    judge_acc = (predict(judge, x_test) == y_test).float().mean().item()
    agreement = (predict(judge, recon) == y_test).float().mean().item()
    classes = sample_classes(ali, judge, cfg.eval.n_samples, cfg.seed)
    return {
        "data": cfg.data.name,
        "seed": cfg.seed,
        "test_images": len(x_test),
        "recon_mse": mse,
        "linear_probe_acc": latent_acc,
        "pixel_probe_acc": pixel_acc,
        "encoder_hidden_probe_acc": hidden_acc,
        "probe_train_examples": len(idx),
        "labels_per_class": cfg.eval.labels_per_class,
        "judge_test_acc": judge_acc,
        "recon_label_agreement": agreement,
        **class_histogram(classes, data.num_classes),
        "eval_seconds": time.perf_counter() - started,
    }


def write_eval(run_dir: str | Path, result: dict) -> Path:
    """Write eval.json into a run folder."""
    path = Path(run_dir) / "eval.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
