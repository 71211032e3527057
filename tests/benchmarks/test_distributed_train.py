"""Two real processes under torchrun (gloo, CPU): they train, only rank 0 writes, losses match one process."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = ["model.hidden=64", "model.latent_dim=8", "train.batch_size=128", "train.epochs=1", "train.max_steps=6",
        "threads=1", "device=cpu", "guard.enabled=false", "train.image_every=100"]


def _train(out: Path, nproc: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "benchmarks.cli", "-q", "train-ali", *ARGS, f"output_dir={out}", "--no-eval"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_port=29517",
               "-m", "benchmarks.cli", "-q", "train-ali", *ARGS, f"output_dir={out}", "--no-eval"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 1
    return {k: float(v) for k, v in rows[0].items()}


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    single = _train(tmp_path / "single", 1)
    double = _train(tmp_path / "double", 2)
    assert double["step"] == single["step"] == 6
    # Same global batch, same initial weights: the averaged losses agree up to the per-rank noise draws.
    for key in ("loss_d", "loss_g", "cycle_x"):
        assert double[key] == pytest.approx(single[key], abs=0.05), key
    written = sorted(p.name for p in (tmp_path / "double").iterdir())
    assert written.count("checkpoint.pt") == 1
    assert len([n for n in written if n.startswith("events.out.tfevents")]) == 1  # one writer
    assert not [n for n in written if n.endswith(".tmp")]
