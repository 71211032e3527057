"""One writer per output folder: the lock file, a live holder, a killed holder, and the trainer's use of it."""
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ali_replay.config import load_run_config
from ali_replay.errors import UserError
from ali_replay.run_lock import LOCK_FILE, FolderInUseError, RunLock
from ali_replay.trainer import ALITrainer

SMALL = ["model.hidden=64", "model.latent_dim=8", "train.batch_size=128", "threads=1", "device=cpu",
         "train.epochs=1", "train.max_steps=2"]


def _holder_process(folder, repo_root):
    """A real process that takes the folder's lock and keeps it until killed."""
    script = textwrap.dedent(f"""
        import time
        from ali_replay.run_lock import RunLock
        RunLock({str(folder)!r}).acquire()
        print("locked", flush=True)
        time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=repo_root, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_lock_file_holds_the_pid_and_goes_on_release(tmp_path):
    folder = tmp_path / "out"
    with RunLock(folder) as lock:
        assert lock.held
        assert (folder / LOCK_FILE).read_text().split()[0] == str(os.getpid())
        (folder / "results.json").write_text("{}")
    assert not (folder / LOCK_FILE).exists()
    assert (folder / "results.json").is_file()  # only the lock file goes


def test_a_failed_start_leaves_no_empty_folder(tmp_path):
    folder = tmp_path / "new" / "out"
    lock = RunLock(folder).acquire()
    lock.release()
    assert not folder.exists()


def test_a_file_is_not_an_output_folder(tmp_path):
    file = tmp_path / "taken"
    file.write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        RunLock(file).acquire()


def test_second_holder_is_refused_naming_pid_and_folder(tmp_path, repo_root):
    folder = tmp_path / "out"
    child = _holder_process(folder, repo_root)
    try:
        with pytest.raises(FolderInUseError) as err:
            RunLock(folder).acquire()
        message = str(err.value)
        assert f"process {child.pid}" in message and str(folder) in message and "\n" not in message
    finally:
        child.kill()
        child.wait()


def test_lock_of_a_killed_process_is_taken_over(tmp_path, repo_root, caplog):
    folder = tmp_path / "out"
    child = _holder_process(folder, repo_root)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert (folder / LOCK_FILE).read_text().split()[0] == str(child.pid)  # left behind by kill -9
    with caplog.at_level(logging.WARNING, logger="ali_replay.run_lock"):
        with RunLock(folder):
            assert (folder / LOCK_FILE).read_text().split()[0] == str(os.getpid())
    assert any(f"pid {child.pid}" in m and "taking over" in m for m in caplog.messages)


def test_stale_lock_file_with_a_dead_pid_is_taken_over(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / LOCK_FILE).write_text(f"{_dead_pid()} somehost\n")
    with RunLock(folder) as lock:
        assert lock.held
    assert not (folder / LOCK_FILE).exists()


def test_trainer_holds_the_folder_until_fit_ends(tmp_path):
    out = tmp_path / "run"
    trainer = ALITrainer(load_run_config(None, [*SMALL, f"output_dir={out}"]))
    assert (out / LOCK_FILE).read_text().split()[0] == str(os.getpid())
    with pytest.raises(FolderInUseError, match=str(out)):
        ALITrainer(load_run_config(None, [*SMALL, f"output_dir={out}"]), overwrite=True)
    trainer.fit()
    assert not (out / LOCK_FILE).exists() and (out / "checkpoint.pt").is_file()
    resumed = ALITrainer(load_run_config(None, [*SMALL, f"output_dir={out}", "train.epochs=2",
                                             "train.max_steps=4"]), resume=True)
    resumed.fit()
    assert resumed.step == 4 and not (out / LOCK_FILE).exists()


def test_trainer_lets_go_when_its_start_fails(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserError, match="train.batch_size=5000"):
        ALITrainer(load_run_config(None, [*SMALL, "train.batch_size=5000", f"output_dir={out}"]))
    assert not out.exists()  # created for the lock, nothing written: removed again


def test_trainer_lets_go_on_ctrl_c(tmp_path, monkeypatch):
    out = tmp_path / "run"
    trainer = ALITrainer(load_run_config(None, [*SMALL, "train.max_steps=20", f"output_dir={out}"]))

    def interrupt():
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_train_epoch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert not (out / LOCK_FILE).exists()
    with RunLock(out):  # free for the next writer
        pass


@pytest.mark.slow  # two CLI processes that each import torch: ~15 s on an idle 2-core machine, a minute under load
def test_second_train_ali_process_meets_one_line_error(tmp_path, repo_root):
    """Two real `train-ali` processes on one folder: the second is refused; Ctrl-C frees the folder."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "benchmarks.cli", "-q", "train-ali", "model.hidden=64", "model.latent_dim=8",
           "train.batch_size=16", "train.epochs=1000", "threads=1", "device=cpu", "guard.enabled=false",
           "--no-eval", f"output_dir={out}"]
    first = subprocess.Popen(cmd, cwd=repo_root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert (out / LOCK_FILE).read_text().split()[0] == str(first.pid)
        second = subprocess.run([*cmd, "--resume"], cwd=repo_root, env=env, capture_output=True, text=True,
                                timeout=120)
        err = second.stderr.strip()
        assert second.returncode == 2, err
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert f"process {first.pid}" in err and str(out) in err
        first.send_signal(signal.SIGINT)  # Ctrl-C
        assert first.wait(timeout=120) == 130, first.stderr.read()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert not (out / LOCK_FILE).exists()
