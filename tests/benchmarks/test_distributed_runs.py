"""Continual runs under torchrun: two real gloo processes train data-parallel, rank 0 alone writes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ali_replay import distributed
from ali_replay.errors import ConfigError
from benchmarks.compare import check_distributed
from benchmarks import load_compare_config

# Split digits, two solver epochs: long enough that both processes learn every experience. The
# replay recipes step their generators once per solver iteration (`@unfiltered`), so that both
# set-ups take the same generator steps on the same global batches.
ARGS = ["strategies=[naive,ali_replay@unfiltered,gan_replay@unfiltered]", "seeds=[0]", "solver.epochs=2",
        "generator.epochs=2", "solver.batch_size=64", "device=cpu", "threads=1"]


def _compare(out: Path, nproc: int, *overrides: str) -> dict:
    """results.json of the split digits comparison (ARGS, then `overrides`) on nproc processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*ARGS, *overrides]
    command = ["-m", "benchmarks.cli", "-q", "compare", *args, f"output_dir={out}"]
    if nproc == 1:
        command = [sys.executable, *command]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                   "--master_port=29523", *command]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("results in") == 1  # one process prints the report
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    single = _compare(tmp_path / "single", 1)
    double = _compare(tmp_path / "double", 2)
    assert [r["strategy"] for r in double["runs"]] == ["naive", "ali_replay@unfiltered", "gan_replay@unfiltered"]
    for one, two in zip(single["runs"], double["runs"]):
        assert set(one) == set(two)  # the same results format
        assert (one["processes"], two["processes"]) == (1, 2)
        assert len(two["acc_matrix"]) == 5
        # Same global batch, same initial weights, other shards per process: close, not equal.
        assert two["final_avg_acc"] == pytest.approx(one["final_avg_acc"], abs=0.06), one["strategy"]
        assert two["acc_matrix"][0][0] == pytest.approx(one["acc_matrix"][0][0], abs=0.03)
    # Replay helps in both set-ups: the generators trained in step across the processes.
    accs = {r["strategy"]: r["final_avg_acc"] for r in double["runs"]}
    assert accs["ali_replay@unfiltered"] > accs["naive"] + 0.2
    out = tmp_path / "double"
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["ali_replay@unfiltered_seed0", "gan_replay@unfiltered_seed0",
                                                                 "naive_seed0"]
    assert not list(out.rglob("*.tmp*"))


@pytest.fixture
def two_processes(monkeypatch):
    """Pretend this process is rank 0 of two (for the checks made before any training)."""
    monkeypatch.setattr(distributed, "current", lambda: distributed.DistContext(0, 2))


@pytest.mark.parametrize("override, message", [
    ("strategies=[vae_replay]", "cannot train data-parallel under torchrun"),
    ("benchmark.scenario=task_incremental", "only benchmark.scenario=class_incremental"),
    ("jobs=2", "use jobs=1 with torchrun"),
    ("solver.batch_size=63", "must be divisible by the number of processes"),
])
def test_unsupported_set_ups_are_refused_before_training(two_processes, override, message):
    cfg = load_compare_config(None, ["strategies=[ali_replay]", override])
    with pytest.raises(ConfigError, match=message):
        check_distributed(cfg)


def test_a_single_process_accepts_everything():
    cfg = load_compare_config(None, ["strategies=[vae_replay]", "jobs=2", "solver.batch_size=63"])
    check_distributed(cfg)  # no process group: nothing to refuse


TRAINING = "ali_replay@features+train_after_freeze=true"  # the generator trains on after the freeze


@pytest.mark.slow
def test_the_frozen_encoder_recipe_trains_data_parallel(tmp_path):
    """ali_replay@features freezes its encoder after the first experience inside DistributedDataParallel
    and its head takes the same steps on the class statistics on every process: the two processes end
    within noise of one, with the generator idle after the freeze (the recipe) and training on (the
    decoder's gradients averaged across them)."""
    runs = {}
    for nproc in (1, 2):
        out = tmp_path / f"p{nproc}"
        runs[nproc] = _compare(out, nproc, f"strategies=[naive,ali_replay@features,{TRAINING}]", "solver.epochs=10",
                               "generator.epochs=10")["runs"]
    for one, two in zip(runs[1], runs[2]):
        assert two["processes"] == 2
        assert two["final_avg_acc"] == pytest.approx(one["final_avg_acc"], abs=0.06), one["strategy"]
    accs = {r["strategy"]: r["final_avg_acc"] for r in runs[2]}
    assert accs["ali_replay@features"] > accs["naive"] + 0.08, (accs, runs[1])  # before the head's steps: 0.33 vs 0.19
    assert accs[TRAINING] > accs["naive"] + 0.08, (accs, runs[1])
