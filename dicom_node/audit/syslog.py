"""Sending audit messages to an audit record repository: syslog (RFC 5424) over TLS with
octet-counting framing (RFC 5425), as IHE ATNA's Record Audit Event transaction does.

A background thread sends; whoever records an event only appends to a queue, so a slow or
unreachable repository never holds a DICOM or HTTP request. Messages the repository has not
taken stay queued (the oldest dropped past ``max_queued``, counted in the log; the audit file
keeps every one) and go out when it answers again.
"""

from __future__ import annotations

import collections
import logging
import socket
import ssl
import threading
import time
from datetime import UTC, datetime

from .settings import SyslogSettings

log = logging.getLogger(__name__)

#: PRI: facility 10 (security/authorization), severity 5 (notice), as IHE ITI TF-2 asks
_PRI = "<85>"
_APP_NAME = "dicom-node"
_MSG_ID = "IHE+RFC-3881"
_BOM = b"\xef\xbb\xbf"
_CONNECT_TIMEOUT = 10.0
_FIRST_RETRY = 1.0
_MAX_RETRY = 60.0


def frame(message: bytes, host: str, process_id: int, when: datetime) -> bytes:
    """One RFC 5424 syslog message holding `message` (UTF-8 XML), framed by its length
    (RFC 5425: ``MSG-LEN SP SYSLOG-MSG``)."""
    timestamp = when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    header = f"{_PRI}1 {timestamp} {host or '-'} {_APP_NAME} {process_id} {_MSG_ID} - "
    syslog_message = header.encode("ascii", "replace") + _BOM + message
    return f"{len(syslog_message)} ".encode() + syslog_message


def tls_context(settings: SyslogSettings) -> ssl.SSLContext:
    """TLS 1.2 or later, the repository's certificate checked against ``ca_file`` and its
    host name, the node's own certificate offered when configured."""
    context = ssl.create_default_context(cafile=str(settings.ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.certificate_file is not None and settings.key_file is not None:
        context.load_cert_chain(str(settings.certificate_file), str(settings.key_file))
    return context


class SyslogSender:
    """Sends queued frames to the repository from its own thread, connecting when needed."""

    def __init__(self, settings: SyslogSettings) -> None:
        self._settings = settings
        self._context = tls_context(settings)
        self._queue: collections.deque[bytes] = collections.deque()
        self._dropped = 0
        self._wake = threading.Condition()
        self._stopping = False
        self._connection: ssl.SSLSocket | None = None
        self._thread = threading.Thread(target=self._run, name="audit-syslog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, framed: bytes) -> None:
        """Queue one framed message; never blocks on the network."""
        with self._wake:
            if len(self._queue) >= self._settings.max_queued:
                self._queue.popleft()
                self._dropped += 1
            self._queue.append(framed)
            self._wake.notify()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued for up to `timeout` seconds, then close."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout)
        self._close()

    def _next(self) -> bytes | None:
        with self._wake:
            while not self._queue and not self._stopping:
                self._wake.wait()
            if self._dropped:
                log.warning(
                    "audit repository unreachable: %d older message(s) dropped from the "
                    "sending queue (they are in the audit file)",
                    self._dropped,
                )
                self._dropped = 0
            return self._queue[0] if self._queue else None

    def _run(self) -> None:
        delay = _FIRST_RETRY
        while (framed := self._next()) is not None:
            try:
                self._send(framed)
            except (OSError, ssl.SSLError) as error:
                self._close()
                if self._stopping:
                    return
                log.warning(
                    "audit repository %s:%d: %s; retrying in %.0f s",
                    self._settings.host,
                    self._settings.port,
                    error,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY)
                continue
            delay = _FIRST_RETRY
            with self._wake:
                self._queue.popleft()

    def _send(self, framed: bytes) -> None:
        if self._connection is None:
            raw = socket.create_connection(
                (self._settings.host, self._settings.port), timeout=_CONNECT_TIMEOUT
            )
            try:
                self._connection = self._context.wrap_socket(
                    raw, server_hostname=self._settings.host
                )
            except BaseException:
                raw.close()
                raise
        self._connection.sendall(framed)

    def _close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except OSError:
                pass
            self._connection = None
