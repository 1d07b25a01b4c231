"""The storage area: received bytes, written durably and never modified afterwards.

A file is written under `incoming/`, fsynced, then renamed into its shard folder and the
folder fsynced, so a file that has a row in the index is always complete. Anything left in
`incoming/` after a crash was never acknowledged and is removed at start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from pathlib import Path

log = logging.getLogger(__name__)


class StorageError(OSError):
    """The storage area could not take or give back a file."""


class StorageArea:
    """Files under one root folder, named by random UUIDs in two levels of shard folders."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.incoming = self.root / "incoming"

    def prepare(self) -> None:
        """Create the folders and drop partial files left by a crash (never acknowledged)."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        for leftover in self.incoming.iterdir():
            log.warning("removing partial file left by an interrupted store: %s", leftover.name)
            leftover.unlink(missing_ok=True)

    def write(self, chunks: list[bytes]) -> str:
        """Write `chunks` as one new durable file; return its path relative to the root."""
        name = uuid.uuid4().hex
        relative = f"{name[:2]}/{name[2:4]}/{name}.dcm"
        final = self.root / relative
        partial = self.incoming / name
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            folder = final.parent
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                _fsync_folder(folder.parent)
                _fsync_folder(folder.parent.parent)
            os.rename(partial, final)
            _fsync_folder(folder)
        except OSError as error:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise StorageError(error.errno, f"cannot write to storage: {error.strerror}") from None
        return relative

    def path(self, relative: str) -> Path:
        return self.root / relative

    def remove(self, relative: str) -> None:
        try:
            (self.root / relative).unlink(missing_ok=True)
        except OSError as error:
            log.error("cannot remove stored file %s: %s", relative, error.strerror)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
