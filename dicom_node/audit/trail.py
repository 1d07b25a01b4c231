"""The audit trail of a process: the audit file, and the audit repository when configured.

Every process of the node (the main one, each receiver, each job worker) opens the trail once
at its start, as it configures logging, and its stages call `record`. Each message is one line
appended to the one audit file with a single write (O_APPEND: lines of several processes never
interleave) and synced to disk before the node answers for the event: `record` syncs before it
returns; `record_soon` returns at once and syncs in the background, for a caller with work to do
before its answer (a C-FIND: its query), which waits for the sync only then; `record_unhurried`
is for a message whose answer has already left (an association's, after its A-ASSOCIATE-AC): its
sync waits up to UNHURRIED_SECONDS for a message that somebody waits for. Syncs asked for
meanwhile are taken by one fdatasync (each costs milliseconds on a busy disk): a C-FIND's answer
waited for two in a row, its association's and then its query's. The file is created 0600
(messages name patients) and holds nothing else.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from .messages import AuditEvent, AuditSource, to_xml
from .settings import AuditSettings
from .syslog import SyslogSender, frame

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a message nobody waits for may stay unsynced, for a sync shared with the next one.
UNHURRIED_SECONDS = 0.05


class _Syncer:
    """fdatasync of one file in a background thread; each sync covers every line written
    before it started."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self._path = path
        self._changed = threading.Condition()
        self._written = 0  # lines written (numbered from 1)
        self._synced = 0  # lines on disk
        self._awaited = 0  # the last line written whose sync somebody will wait for
        self._thread: threading.Thread | None = None

    def written(self, awaited: bool = True) -> Callable[[], None]:
        """Sync the lines written so far; the answer waits until they are on disk. A line
        nobody waits for (`awaited` False) is synced with the next awaited one, or after
        UNHURRIED_SECONDS."""
        with self._changed:
            self._written += 1
            line = self._written
            if awaited:
                self._awaited = line
            # started on first use, and again in a child forked from a process that had one
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-sync", daemon=True)
                self._thread.start()
            self._changed.notify_all()

        def wait() -> None:
            with self._changed:
                self._changed.wait_for(lambda: self._synced >= line)

        return wait

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._synced < self._written)
                self._changed.wait_for(
                    lambda: self._awaited > self._synced, timeout=UNHURRIED_SECONDS
                )
                target = self._written
            try:
                os.fdatasync(self._fd)
            except OSError as error:
                # as `record` does: logged, never raised; the operation it audits is done
                log.error("cannot sync the audit file %s: %s", self._path, error.strerror)
            with self._changed:
                self._synced = target
                self._changed.notify_all()


class AuditTrail:
    """Appends messages to the audit file and hands them to the syslog sender."""

    def __init__(self, path: Path, source: AuditSource, sender: SyslogSender | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.path = path
        self.source = source
        self._sender = sender
        self._syncer = _Syncer(self._fd, path)

    def record(self, event: AuditEvent) -> None:
        self._write(event)
        os.fdatasync(self._fd)

    def record_soon(self, event: AuditEvent) -> Callable[[], None]:
        self._write(event)
        return self._syncer.written()

    def record_unhurried(self, event: AuditEvent) -> None:
        self._write(event)
        self._syncer.written(awaited=False)

    def _write(self, event: AuditEvent) -> None:
        when = datetime.now().astimezone()
        message = to_xml(event, self.source, when)
        os.write(self._fd, message + b"\n")
        if self._sender is not None:
            self._sender.put(frame(message, self.source.host, self.source.process_id, when))

    def close(self) -> None:
        if self._sender is not None:
            self._sender.stop()
        os.fdatasync(self._fd)  # an unhurried message may wait for its sync still
        os.close(self._fd)


_trail: AuditTrail | None = None


def open_trail(settings: AuditSettings, path: Path, ae_title: str) -> AuditTrail:
    """Open this process's trail (the file at `path`, the repository of `settings.syslog`)."""
    global _trail
    close_trail()
    sender = SyslogSender(settings.syslog) if settings.syslog is not None else None
    source = AuditSource(ae_title, socket.gethostname(), os.getpid())
    _trail = AuditTrail(path, source, sender)
    if sender is not None:
        sender.start()
    return _trail


def close_trail() -> None:
    global _trail
    if _trail is not None:
        _trail.close()
        _trail = None


def record(event: AuditEvent) -> None:
    """Record `event` in this process's trail (nothing where none is open: a command that does
    not serve)."""
    _to_trail(lambda trail: trail.record(event), None)


def record_soon(event: AuditEvent) -> Callable[[], None]:
    """Write `event` to this process's trail now and sync it in the background; call the
    answer before answering for the event: it returns once the message is on disk."""
    return _to_trail(lambda trail: trail.record_soon(event), _nothing)


def record_unhurried(event: AuditEvent) -> None:
    """Write `event` to this process's trail now; it is synced with the next message somebody
    waits for, within UNHURRIED_SECONDS in any case. For an event already answered."""
    _to_trail(lambda trail: trail.record_unhurried(event), None)


def _to_trail(write: Callable[[AuditTrail], T], otherwise: T) -> T:
    """`write` applied to this process's trail; `otherwise` where none is open or the write
    fails. A failed write is logged, never raised: the operation it audits is done."""
    trail = _trail
    if trail is None:
        return otherwise
    try:
        return write(trail)
    except OSError as error:
        log.error("cannot write to the audit file %s: %s", trail.path, error.strerror)
        return otherwise


def _nothing() -> None:
    """Nothing to wait for."""
