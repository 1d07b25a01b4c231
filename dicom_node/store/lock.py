"""One node per storage area: `serve` takes an exclusive lock on a file in the area before it
touches anything (metrics folder, crash recovery, index), so a second node started with the same
configuration stops at once and says who holds the area, instead of "recovering" the files a
live node is writing. The kernel drops the lock when the holder dies, however it dies."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

LOCK_NAME = "node.lock"


class StorageLocked(Exception):
    """Another live process holds the storage area."""


class StorageLock:
    """The held lock; released by `release` or by the end of the process."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / LOCK_NAME
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 512, 0).decode("utf-8", "replace").strip()
            os.close(self._fd)
            raise StorageLocked(
                f"storage.path {root} is in use by another node ({holder or 'unknown process'}); "
                "stop it first, or give this node its own storage.path"
            ) from None
        os.ftruncate(self._fd, 0)
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.pwrite(
            self._fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode(), 0
        )

    def release(self) -> None:
        os.ftruncate(self._fd, 0)
        os.close(self._fd)
