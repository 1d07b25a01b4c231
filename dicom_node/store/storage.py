"""The storage area: received bytes, written durably and never modified afterwards.

A file is created under its final name in its shard folder; `sync` then flushes the file and
its folder to disk. The C-STORE handler flushes while the index commits the file's row and
answers only when both are done; `recovery` settles what a crash leaves between the two,
partial files included (they have no row). Files are created where they stay: a rename from a
folder of partial files into the shard costs a lock of the whole file system per file, and
creating every file in one folder makes ext4 search one group's inode table over and over.

Beside each file ("x.dcm") may lie its metadata document ("x.json", see `metadata`): derived
from the file, written once and never flushed, removed with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_SHARD = re.compile(r"[0-9a-f]{2}")
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL
#: stored files and their folders hold patient data: owner-only (the node's own user)
_FILE_MODE = 0o600
_FOLDER_MODE = 0o700
#: what the health check writes: one block, which a full file system refuses at once
_PROBE_BYTES = 4096


class StorageError(OSError):
    """The storage area could not take or give back a file."""


class StorageArea:
    """Files under one root folder, named by random UUIDs in two levels of shard folders."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._root = str(self.root)

    def prepare(self) -> None:
        """Create the root folder."""
        self.root.mkdir(mode=_FOLDER_MODE, parents=True, exist_ok=True)

    def write(self, chunks: list[bytes]) -> str:
        """Write `chunks` as one new file; return its path relative to the root.

        The file is complete for readers once this returns, durable once `sync` returns.
        """
        name = uuid.uuid4().hex
        relative = f"{name[:2]}/{name[2:4]}/{name}.dcm"
        path = os.path.join(self._root, relative)
        try:
            fd = _create(path)
        except OSError as error:
            raise StorageError(error.errno, f"cannot write to storage: {error.strerror}") from None
        try:
            _write_all(fd, chunks)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise StorageError(error.errno, f"cannot write to storage: {error.strerror}") from None
        finally:
            os.close(fd)
        return relative

    def write_metadata(self, relative: str, document: bytes) -> None:
        """Write the metadata document of the stored file `relative` (not flushed: it can be
        built again from the file; a reader takes only a document that parses)."""
        fd = _create(self._root + "/" + _metadata_name(relative))
        try:
            _write_all(fd, [document])
        finally:
            os.close(fd)

    def read_metadata(self, relative: str) -> bytes | None:
        """The metadata document of the stored file `relative`; None if it has none."""
        try:
            with open(self._root + "/" + _metadata_name(relative), "rb") as file:
                return file.read() or None
        except FileNotFoundError:
            return None

    def drop_metadata(self, relative: str) -> None:
        """Remove the metadata document of `relative` (one a crash may have left unwritten)."""
        try:
            (self.root / _metadata_name(relative)).unlink(missing_ok=True)
        except OSError as error:
            log.error("cannot remove metadata of %s: %s", relative, error.strerror)

    def sync(self, relative: str) -> None:
        """Flush a written file's data and its folder entry to disk."""
        path = os.path.join(self._root, relative)
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)  # the data and the size; the name is in the folder's sync
            finally:
                os.close(fd)
            _fsync_folder(os.path.dirname(path))
        except OSError as error:
            raise StorageError(error.errno, f"cannot flush to storage: {error.strerror}") from None

    def check_writable(self) -> None:
        """Write and remove a one-block file the way received files are written; StorageError
        if that fails. An empty file would still be created on a full disk."""
        relative = self.write([bytes(_PROBE_BYTES)])
        try:
            os.unlink(os.path.join(self._root, relative))
        except OSError as error:
            raise StorageError(error.errno, f"storage not writable: {error.strerror}") from None

    def path(self, relative: str) -> Path:
        return self.root / relative

    def remove(self, relative: str) -> None:
        """Remove a stored file and its metadata document."""
        try:
            (self.root / relative).unlink(missing_ok=True)
        except OSError as error:
            log.error("cannot remove stored file %s: %s", relative, error.strerror)
        self.drop_metadata(relative)

    def files_changed_since(self, timestamp: float) -> Iterator[str]:
        """Relative paths of stored files modified at or after `timestamp`.

        Only shard folders whose own mtime (set when a file is renamed in) is that recent are
        listed, so this costs one stat per shard folder rather than one per file.
        """
        for top in _shards(self.root):
            for shard in _shards(Path(top.path)):
                if shard.stat().st_mtime < timestamp:
                    continue
                for entry in os.scandir(shard.path):
                    if entry.name.endswith(".dcm") and entry.stat().st_mtime >= timestamp:
                        yield f"{top.name}/{shard.name}/{entry.name}"


def _write_all(fd: int, chunks: list[bytes]) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


def _metadata_name(relative: str) -> str:
    return relative.removesuffix(".dcm") + ".json"


def _create(path: str) -> int:
    """Open a new file for writing, creating its shard folder (durably) the first time."""
    try:
        return os.open(path, _NEW_FILE, _FILE_MODE)
    except FileNotFoundError:
        folder = os.path.dirname(path)
        for level in (os.path.dirname(folder), folder):  # makedirs' mode is the leaf's only
            with contextlib.suppress(FileExistsError):
                os.mkdir(level, _FOLDER_MODE)
        _fsync_folder(os.path.dirname(folder))
        _fsync_folder(os.path.dirname(os.path.dirname(folder)))
        return os.open(path, _NEW_FILE, _FILE_MODE)


def _shards(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as entries:
        return [e for e in entries if _SHARD.fullmatch(e.name) and e.is_dir()]


def _fsync_folder(folder: str | Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
