"""One writer per output folder: a lock file that holds the writer's pid, guarded by an OS file lock.

The operating system's lock (`flock`) decides who holds the folder, so a process that dies, even
by `kill -9`, lets go of it at once; its lock file, still naming its pid, is then taken over by the
next writer. The pid in the file only tells a refused process whom it waits for.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Optional

from ali_replay.errors import UserError

log = logging.getLogger(__name__)

LOCK_FILE = ".ali-replay.lock"


class FolderInUseError(UserError):
    """Another live process writes into the output folder."""


def _holder(path: Path) -> tuple[Optional[int], str]:
    """The pid and host written in a lock file (None while its writer has not filled it in yet)."""
    for _ in range(20):
        try:
            text = path.read_text()
        except OSError:
            text = ""
        parts = text.split()
        if parts and parts[0].isdigit():
            return int(parts[0]), parts[1] if len(parts) > 1 else "?"
        time.sleep(0.01)  # the holder creates the file, then writes its pid
    return None, "?"


class RunLock:
    """The right to write into `folder`, held by this process from `acquire` until `release`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: Optional[int] = None
        self._created_folder = False

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> "RunLock":
        """Lock the folder (created when absent) or raise FolderInUseError naming the live holder's pid."""
        if self.held:
            return self
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"output folder {self.folder} is a file, not a folder; choose another output_dir")
        created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create output folder {self.folder} ({err.strerror}); "
                            f"choose another output_dir") from err
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise UserError(f"cannot write into output folder {self.folder} ({err.strerror}); "
                                f"choose another output_dir") from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UserError(f"cannot lock output folder {self.folder} ({err.strerror}): its file system "
                                    f"offers no file locks; choose an output_dir on a local disk") from err
                pid, host = _holder(self.path)
                who = f"process {pid}" + ("" if host in ("?", socket.gethostname()) else f" on {host}")
                if pid is None:
                    who = "another process"
                elif pid == os.getpid():
                    who += " (this process itself)"
                raise FolderInUseError(
                    f"output folder {self.folder} is in use by {who}, which is writing there; wait for it to "
                    f"finish or stop it, or choose another output_dir") from None
            # The previous holder may have removed the file between our open and our lock: a lock
            # on that orphan would exclude nobody, so open the path again.
            try:
                on_disk = os.stat(self.path)
            except FileNotFoundError:
                on_disk = None
            mine = os.fstat(fd)
            if on_disk is None or (on_disk.st_ino, on_disk.st_dev) != (mine.st_ino, mine.st_dev):
                os.close(fd)
                continue
            previous = os.read(fd, 256).decode(errors="replace").split()
            if previous and previous[0] != str(os.getpid()):
                log.warning("taking over %s: the process that held it (pid %s) has ended", self.path, previous[0])
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            self._fd, self._created_folder = fd, created
            return self
        raise FolderInUseError(f"output folder {self.folder}: its lock file {self.path} keeps being replaced; "
                               f"another process is starting there, choose another output_dir")

    def release(self) -> None:
        """Remove the lock file and let go of the folder (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            # Remove the file only while it is still ours; the OS lock goes with the descriptor.
            on_disk = os.stat(self.path)
            mine = os.fstat(fd)
            if (on_disk.st_ino, on_disk.st_dev) == (mine.st_ino, mine.st_dev):
                self.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
        if self._created_folder:
            try:
                self.folder.rmdir()  # only when nothing was written: a failed start leaves no empty folder
            except OSError:
                pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, kind: Optional[type], value: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.release()
