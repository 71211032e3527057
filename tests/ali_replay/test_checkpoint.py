"""Atomic checkpoints: round trip, corrupt files, and never losing the last good file."""
import pytest
import torch

from ali_replay.checkpoint import load_checkpoint, save_checkpoint
from ali_replay.errors import CheckpointError


def test_round_trip(tmp_path):
    state = {"weights": torch.arange(6.0).view(2, 3), "epoch": 4, "config": {"a": 1}}
    save_checkpoint(state, tmp_path / "c.pt")
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(loaded["weights"], state["weights"]) and loaded["epoch"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_truncated_checkpoint_is_named_and_left_untouched(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"w": torch.randn(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"c\.pt is truncated or corrupt"):
        load_checkpoint(path)
    assert path.read_bytes() == data[: len(data) // 2]


def test_garbage_and_missing_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"epoch": 1}, path)

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
