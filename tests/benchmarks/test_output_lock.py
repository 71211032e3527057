"""One writer per comparison folder: a live writer refuses the next, and the lock goes on exit, error or Ctrl-C."""
import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from ali_replay.run_lock import LOCK_FILE, FolderInUseError
from benchmarks import compare

from .conftest import tiny_config

COMPARE_MODULE = importlib.import_module("benchmarks.compare")  # the package exports a function of that name


def test_a_finished_comparison_leaves_no_lock(tiny_results):
    out, _ = tiny_results
    assert (out / "results.json").is_file() and not (out / LOCK_FILE).exists()


def test_second_process_is_refused_while_the_first_writes(tiny_results, tmp_path, repo_root):
    src, _ = tiny_results
    out = tmp_path / "busy"
    shutil.copytree(src, out)
    before = (out / "results.json").read_bytes()
    script = textwrap.dedent(f"""
        import time
        from ali_replay.run_lock import RunLock
        RunLock({str(out)!r}).acquire()
        print("locked", flush=True)
        time.sleep(600)
    """)
    writer = subprocess.Popen([sys.executable, "-c", script], cwd=repo_root, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "locked"
        for flag in ({}, {"resume": True}, {"overwrite": True}):
            with pytest.raises(FolderInUseError) as err:
                compare(tiny_config(out), **flag)
            assert f"process {writer.pid}" in str(err.value) and str(out) in str(err.value)
        assert (out / "results.json").read_bytes() == before  # not even --overwrite touched it
    finally:
        writer.kill()
        writer.wait()
    # The writer was killed: its lock is taken over and the folder continues with --resume.
    results = compare(tiny_config(out), resume=True)
    assert [r["started_at"] for r in results["runs"]] == [r["started_at"] for r in json.loads(before)["runs"]]
    assert not (out / LOCK_FILE).exists()


@pytest.mark.parametrize("failure", [RuntimeError("boom"), KeyboardInterrupt()])
def test_lock_goes_when_a_run_fails_or_is_interrupted(tmp_path, monkeypatch, failure):
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(COMPARE_MODULE, "run_single", fail)
    out = tmp_path / "failing"
    with pytest.raises(type(failure)):
        compare(tiny_config(out, "strategies=[naive]"))
    assert (out / "results.json").is_file() and not (out / LOCK_FILE).exists()


def test_eval_ali_does_not_write_beside_a_writer(tmp_path, capsys):
    from ali_replay.config import load_run_config
    from ali_replay.run_lock import RunLock
    from ali_replay.trainer import ALITrainer
    from benchmarks.cli import main

    out = tmp_path / "run"
    ALITrainer(load_run_config(None, ["model.hidden=32", "model.latent_dim=4", "train.batch_size=128", "threads=1",
                                      "device=cpu", "train.epochs=1", "train.max_steps=2",
                                      f"output_dir={out}"])).fit()
    capsys.readouterr()  # the training's progress bar
    with RunLock(out):  # a writer holds the folder (here: this very process, through another handle)
        assert main(["-q", "eval-ali", str(out), "eval.n_samples=100"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"process {os.getpid()}" in err and str(out) in err
    assert not (out / "eval.json").exists()
