"""HTTP connections that cannot be held open for nothing, nor fill memory with a request head.

uvicorn times a connection out only between requests (keep-alive). A client that connects and
sends nothing, sends its request head a byte at a time, or stops in the middle of a body would
hold its socket, its file descriptor and its slot for ever; a few thousand of them stop the
node. This protocol gives the request head a deadline from its first byte (or from the
connection, for the first request) and every later read of the request an idle limit, then
closes the connection with a log line naming the client.

The parser is httptools (llhttp, C), which costs a DICOMweb answer about a tenth less CPU than
h11 (which also copies every body piece it frames); unlike h11 it sets no bound on a request
head, so the head's size is bounded here (`MAX_HEAD_BYTES`, h11's own default), answered with
431 and a log line.
"""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

#: The largest request head (request line and header fields) the node reads.
MAX_HEAD_BYTES = 16 * 1024

_HEAD, _BODY, _DONE = "head", "body", "done"


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-head deadline and size bound and a read
    idle limit."""

    head_seconds: ClassVar[float] = 10.0
    idle_seconds: ClassVar[float] = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._reading = _HEAD
        self._head_bytes = 0
        self._arm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._reading == _HEAD:  # counted once parsed: a chunk may also hold a body
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_head()
                return
        self._watch()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading = _HEAD

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._reading = _BODY
        self._head_bytes = 0

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading = _DONE

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._cancel()  # uvicorn's keep-alive timeout takes over until the next request

    def _watch(self) -> None:
        """After each read: a head still incomplete keeps its deadline; a body still owed gets
        a fresh idle limit; a complete request needs neither."""
        if self.transport.is_closing():
            return
        if self._reading == _HEAD:  # part of a request head (the next one, on a kept-alive line)
            self._arm_head()
            self._arm_idle()
        elif self._reading == _BODY:
            self._cancel_head()
            self._arm_idle()
        else:
            self._cancel()

    def _refuse_head(self) -> None:
        log.warning(
            "HTTP connection from %s closed: request head over %d bytes",
            self._client_name(),
            MAX_HEAD_BYTES,
        )
        self._cancel()
        message = b"request head too large"
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(message), message)
        )
        self.transport.close()

    def _client_name(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "unknown client"

    def _arm_head(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.head_seconds,
                self._too_slow,
                f"no complete request head in {self.head_seconds:g} s",
            )

    def _arm_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = self.loop.call_later(
            self.idle_seconds, self._too_slow, f"nothing received for {self.idle_seconds:g} s"
        )

    def _cancel_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel(self) -> None:
        self._cancel_head()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _too_slow(self, why: str) -> None:
        if self.flow is not None and self.flow.read_paused:
            self._arm_idle()  # the node is not reading (the app is busy): not the client's fault
            return
        log.warning("HTTP connection from %s closed: %s", self._client_name(), why)
        self._cancel()
        self.transport.close()


def guarded_protocol(head_seconds: float, idle_seconds: float) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with these limits (uvicorn instantiates it per connection)."""
    return type(
        "ConfiguredGuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"head_seconds": head_seconds, "idle_seconds": idle_seconds},
    )
