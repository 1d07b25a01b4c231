"""One node per storage area: `serve` takes an exclusive lock on a file in the area before it
touches anything (metrics folder, crash recovery, index), so a second node started with the same
configuration stops at once and says who holds the area, instead of "recovering" the files a
live node is writing. The kernel drops the lock when the holder dies, however it dies.

The receiving processes hold the lock too (`LockShare`: the same open file, handed over when they
start): a main process killed outright leaves them finishing their associations for up to their
drain time, still writing files and rows, and a node started meanwhile must not recover (remove)
what they write. That node waits for them (`take_lock`) rather than refusing, as its operator or
supervisor restarts it at once; a live node's lock is refused at once.

The nodes of a cluster (celery engine: receivers and workers on one shared storage area) hold
the lock shared instead: they exclude an embedded node, and it excludes them, but not each
other. A cluster node that finds itself alone (the exclusive lock is free) recovers the area
first, then shares the lock (`share_with_cluster`)."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import time
from multiprocessing.reduction import DupFd
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = "node.lock"
#: what a cluster node that holds the lock alone, to recover the area, adds to its holder line
RECOVERING = "a cluster node recovering the area"


_HOLDER = re.compile(r"pid (\d+) on (\S+),")


class StorageLocked(Exception):
    """Another process holds the storage area."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder

    def main_process_gone(self) -> bool:
        """Whether the node holding the lock lost its main process (on this host), so that only
        its receiving processes, which stop by themselves, still hold it."""
        found = _HOLDER.match(self.holder)
        if found is None or found.group(2) != socket.gethostname():
            return False
        try:
            os.kill(int(found.group(1)), 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False


class StorageLock:
    """The held lock; released by `release` or by the end of the process."""

    def __init__(self, root: Path, shared: bool = False, note: str = "") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / LOCK_NAME
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 512, 0).decode("utf-8", "replace").strip()
            os.close(self._fd)
            raise StorageLocked(
                f"storage.path {root} is in use by another node "
                f"({holder or 'the nodes of a celery cluster, or an unknown process'}); "
                "stop it first, or give this node its own storage.path",
                holder,
            ) from None
        if shared:
            return
        os.ftruncate(self._fd, 0)
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.pwrite(
            self._fd,
            f"pid {os.getpid()} on {socket.gethostname()}, since {started}{note}\n".encode(),
            0,
        )

    def share_with_cluster(self) -> None:
        """Hold the lock shared from now on: the other nodes of the cluster may start."""
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def share(self) -> LockShare:
        """The lock for a child process to hold as long as it lives."""
        return LockShare(self._fd)

    def release(self) -> None:
        os.ftruncate(self._fd, 0)
        os.close(self._fd)


class LockShare:
    """The lock's open file as a child process (spawned) receives it: pickled for the child as
    a duplicate of the descriptor (as multiprocessing hands over sockets), so the lock is held
    until the child, too, is gone."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self):
        return _share_in_child, (DupFd(self.fd),)


def _share_in_child(duplicate) -> LockShare:
    return LockShare(duplicate.detach())


def take_lock(root: Path, patience: float) -> StorageLock:
    """The storage area's lock; waits up to `patience` seconds where only the receiving
    processes of a node whose main process died still hold it."""
    deadline = time.monotonic() + patience
    waiting = False
    while True:
        try:
            return StorageLock(root)
        except StorageLocked as error:
            if not error.main_process_gone() or time.monotonic() > deadline:
                raise
            if not waiting:
                log.warning(
                    "waiting for the receiving processes of a node that died (%s) to finish",
                    error.holder,
                )
                waiting = True
        time.sleep(0.2)


def join_cluster(root: Path, patience: float) -> tuple[StorageLock, bool]:
    """The lock of a cluster node, and whether this node is alone on the area (then it holds
    the lock exclusively, to recover the area, until `share_with_cluster`). Waits up to
    `patience` seconds for a cluster node that is recovering the area."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return StorageLock(root, note=f", {RECOVERING}"), True
        except StorageLocked:
            pass
        try:
            return StorageLock(root, shared=True), False
        except StorageLocked as error:
            if RECOVERING not in error.holder or time.monotonic() > deadline:
                raise  # an embedded node holds it
        time.sleep(0.2)
