"""HTTP connections that cannot be held open for nothing.

uvicorn times a connection out only between requests (keep-alive). A client that connects and
sends nothing, sends its request head a byte at a time, or stops in the middle of a body would
hold its socket, its file descriptor and its slot for ever; a few thousand of them stop the
node. This protocol gives the request head a deadline from its first byte (or from the
connection, for the first request) and every later read of the request an idle limit, then
closes the connection with a log line naming the client.
"""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and a read idle limit."""

    head_seconds: ClassVar[float] = 10.0
    idle_seconds: ClassVar[float] = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._arm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._cancel()  # uvicorn's keep-alive timeout takes over until the next request

    def _watch(self) -> None:
        """After each read: a head still incomplete keeps its deadline; a body still owed gets
        a fresh idle limit; a complete request needs neither."""
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:  # part of a request head (the next one, on a kept-alive line)
            self._arm_head()
            self._arm_idle()
        elif state is h11.SEND_BODY:
            self._cancel_head()
            self._arm_idle()
        else:
            self._cancel()

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
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown client"
        log.warning("HTTP connection from %s closed: %s", client, why)
        self._cancel()
        self.transport.close()


def guarded_protocol(head_seconds: float, idle_seconds: float) -> type[GuardedH11Protocol]:
    """The protocol class with these limits (uvicorn instantiates it per connection)."""
    return type(
        "ConfiguredGuardedH11Protocol",
        (GuardedH11Protocol,),
        {"head_seconds": head_seconds, "idle_seconds": idle_seconds},
    )
