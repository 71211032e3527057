"""Killing a real training process: the last completed epoch stays loadable and --resume finishes the job."""
import os
import signal
import subprocess
import sys
import time

import torch

from ali_replay.checkpoint import load_checkpoint

ARGS = ["model.hidden=64", "model.latent_dim=8", "train.batch_size=128", "threads=1", "device=cpu",
        "train.image_every=100"]


def _start(out, epochs, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "benchmarks.cli", "-q", "train-ali", *ARGS,
                             f"train.epochs={epochs}", *extra,
                             f"output_dir={out}", "--no-eval"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_epoch(proc, path, epoch, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and load_checkpoint(path)["epoch"] >= epoch:
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("no checkpoint in time")


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    straight = _start(tmp_path / "straight", 30)
    assert straight.wait(timeout=300) == 0, straight.stderr.read()

    killed_dir = tmp_path / "killed"
    proc = _start(killed_dir, 30)
    _wait_for_epoch(proc, killed_dir / "checkpoint.pt", 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(killed_dir / "checkpoint.pt")  # loadable after the kill
    assert 2 <= state["epoch"] < 30

    resumed = _start(killed_dir, 30, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(killed_dir / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 30
    for name, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][name].float(), atol=1e-6), name


def test_ctrl_c_exits_cleanly_and_keeps_the_last_epoch(tmp_path):
    proc = _start(tmp_path, 100000)  # far more than the test waits for: the signal always lands mid-run
    _wait_for_epoch(proc, tmp_path / "checkpoint.pt", 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] >= 1
