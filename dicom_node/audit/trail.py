"""The audit trail of a process: the audit file, and the audit repository when configured.

Every process of the node (the main one, each receiver, each job worker) opens the trail once
at its start, as it configures logging, and its stages call `record`. Each message is one line
appended to the one audit file with a single write (O_APPEND: lines of several processes never
interleave) and synced to disk before `record` returns, so an event the node answered for is
on disk. The file is created 0600 (messages name patients) and holds nothing else.

An answer that is streamed (WADO-RS) uses `record_streamed`: the line is written at once and
synced while the answer's first bytes go out, and the answer's last bytes wait for that sync, so
it still completes only once its event is on disk. A sync costs about as much as sending a small
series (1-2 ms), which made WADO-RS slower than a peer that keeps no trail.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from .messages import AuditEvent, AuditSource, to_xml
from .settings import AuditSettings
from .syslog import SyslogSender, frame

log = logging.getLogger(__name__)


class AuditTrail:
    """Appends messages to the audit file and hands them to the syslog sender."""

    def __init__(self, path: Path, source: AuditSource, sender: SyslogSender | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.path = path
        self.source = source
        self._sender = sender

    def record(self, event: AuditEvent) -> None:
        self.write(event)
        self.sync()

    def write(self, event: AuditEvent) -> None:
        """Append the event's line (not yet synced) and hand it to the syslog sender."""
        when = datetime.now().astimezone()
        message = to_xml(event, self.source, when)
        os.write(self._fd, message + b"\n")
        if self._sender is not None:
            self._sender.put(frame(message, self.source.host, self.source.process_id, when))

    def sync(self) -> None:
        """Every line written so far on disk."""
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._sender is not None:
            self._sender.stop()
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
    not serve). A write that fails is logged, never raised: the operation it audits is done."""
    if _trail is None:
        return
    try:
        _trail.record(event)
    except OSError as error:
        _write_failed(_trail, error)


_syncs = ThreadPoolExecutor(max_workers=2, thread_name_prefix="audit-sync")


def record_streamed(event: AuditEvent) -> Callable[[], None]:
    """Record `event` for an answer about to be streamed: written now, synced to disk in the
    background. Call the function returned before the answer's last bytes: it returns once the
    line is on disk (or its failure logged; like `record`, it never raises)."""
    trail = _trail
    if trail is None:
        return _nothing
    try:
        trail.write(event)
    except OSError as error:
        _write_failed(trail, error)
        return _nothing
    synced = _syncs.submit(trail.sync)

    def wait() -> None:
        try:
            synced.result()
        except OSError as error:
            _write_failed(trail, error)

    return wait


def _nothing() -> None:
    """Nothing left to wait for."""


def _write_failed(trail: AuditTrail, error: OSError) -> None:
    log.error("cannot write to the audit file %s: %s", trail.path, error.strerror)
