"""Each script in examples/ runs as it stands, at a tiny size, on the shared MNIST copy."""
import os
import subprocess
import sys

import pytest

TINY = ["--epochs", "1", "--experiences", "2", "--subset", "256"]


def _run(repo_root, shared_data, script, *extra, timeout=900):
    """Run examples/<script> at the tiny size; its stdout (the test fails with stderr's tail otherwise)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, as the rest of the suite
    cmd = [sys.executable, str(repo_root / "examples" / script), "--data-root", str(shared_data), *TINY, *extra]
    done = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _final_accuracy(stdout):
    """The last stream accuracy Avalanche's interactive logger printed."""
    lines = [line for line in stdout.splitlines() if "Top1_Acc_Stream/eval_phase/test_stream" in line]
    assert lines, stdout[-2000:]
    return float(lines[-1].rsplit("=", 1)[1])


def test_generative_replay_with_ali_training_on_the_default_normalising_transform(repo_root, shared_data):
    out = _run(repo_root, shared_data, "generative_replay_ali_training.py")
    assert "replayed in InputSpace(mean=(0.1307,), std=(0.3081,))" in out
    assert 0.0 <= _final_accuracy(out) <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("script", ["naive_plugin_split_mnist.py", "ali_generative_replay.py"])
def test_plugin_examples(repo_root, shared_data, script):
    """About 40 s each: the plugin makes its 60,000 replay examples before the second experience."""
    out = _run(repo_root, shared_data, script)
    assert "Start of eval phase" in out and 0.0 <= _final_accuracy(out) <= 1.0


@pytest.mark.slow
def test_custom_template_writes_its_logs(repo_root, shared_data, tmp_path):
    out = _run(repo_root, shared_data, "custom_template_loggers.py", "--log-dir", str(tmp_path))
    assert 0.0 <= _final_accuracy(out) <= 1.0
    csv = (tmp_path / "csv" / "eval_results.csv").read_text().splitlines()
    assert csv[0].startswith("eval_exp,training_exp,eval_accuracy") and len(csv) > 1
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_split_cifar10_through_avalanches_transforms(repo_root, shared_data):
    """The split CIFAR-10 script on the offline cifar10.npz, through SplitCIFAR10's default transforms."""
    if not (shared_data / "cifar10.npz").is_file():
        pytest.skip("no cifar10.npz in the offline data")
    out = _run(repo_root, shared_data, "split_cifar10_latent_solver.py")
    assert "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp001" in out
    assert 0.0 <= _final_accuracy(out) <= 1.0
