"""The accepted connections of one receiving process, and its shares of the node-wide counts.

Two counts are shared by the receiving processes: open connections (which spread the load)
and associations, counted from the A-ASSOCIATE-RQ on (which the association limit applies to,
so connections that never ask for an association take no association's place). A connection
is given back exactly once, whichever way its association ends: on EVT_CONN_CLOSE, or when
its association thread ends, which also covers what pynetdicom ends without that event (a
reader thread killed by a bad PDU, an association request timed out).

Each process writes only its own slot of the shared counts (its threads take turns on a lock
of its own) and reads the others' without a lock. A lock shared between processes was held for
ever by a process killed while holding it (SIGKILL, the out-of-memory killer): every other
receiving process's listener then waited on it, and the node accepted no association again.

Connections still waiting to send their association request are bounded separately: past the
bound, the one waiting longest is closed, so idle connections cannot starve senders.
"""

from __future__ import annotations

import logging
import socket
import threading
from ctypes import Array, c_int
from dataclasses import dataclass

from pynetdicom.association import Association

from .. import metrics

log = logging.getLogger(__name__)

#: one count per receiving process, in memory they all share (no lock: see the module's text)
SharedCounts = Array[c_int]


@dataclass
class _Connection:
    socket: socket.socket
    address: tuple
    requested: bool = False
    released: bool = False


class Connections:
    """This process's connections, counted into the arrays shared by the receiving processes."""

    def __init__(
        self,
        loads: SharedCounts,
        associations: SharedCounts,
        slot: int,
        max_pending: int,
    ) -> None:
        self._loads = loads
        self._associations = associations
        self._slot = slot
        self._max_pending = max_pending
        self._lock = threading.Lock()
        #: this process's threads take turns at its slots
        self._count_lock = threading.Lock()
        #: by socket, oldest first: accepted, association not yet requested
        self._pending: dict[socket.socket, _Connection] = {}
        self._open: dict[Association, _Connection] = {}

    def busier_than_a_sibling(self) -> bool:
        loads = self._loads[:]
        return loads[self._slot] > min(loads)

    def associations(self) -> int:
        """Associations requested and not yet ended, node-wide."""
        return sum(self._associations[:])

    def accepted(self, sock: socket.socket, address: tuple) -> None:
        """Counted at accept (in the listener thread) so that connections arriving together
        already see this process as busier; closes the longest waiting one past the bound."""
        self._count(self._loads, +1)
        with self._lock:
            self._pending[sock] = _Connection(sock, address)
            evicted = None
            if len(self._pending) > self._max_pending:
                evicted = self._pending.pop(next(iter(self._pending)))
        if evicted is not None:
            log.warning(
                "closing the connection from %s:%s: no association request while %d newer "
                "waiting connections arrived (dicom.max_pending_connections)",
                *evicted.address[:2],
                self._max_pending,
            )
            metrics.FAILURES.labels(reason="connection_evicted").inc()
            # Its reader sees the end of the stream and ends the association as a closed one.
            _shut_down(evicted.socket)

    def opened(self, association: Association) -> None:
        """Ties the connection to its association (on EVT_CONN_OPEN, before its thread runs)
        and gives it back when the association's thread ends, however it ends."""
        transport = association.dul.socket
        # on EVT_CONN_OPEN an acceptor's association has its connected socket
        assert transport is not None and transport.socket is not None
        sock = transport.socket
        with self._lock:
            self._open[association] = self._pending.get(sock) or _Connection(sock, ("?", 0))
        metrics.OPEN_ASSOCIATIONS.inc()
        run = association.run

        def run_then_release() -> None:
            try:
                run()
            finally:
                self.closed(association)

        association.run = run_then_release  # type: ignore[method-assign]  # on purpose, this one

    def requested(self, association: Association) -> None:
        """The peer asked for an association (EVT_REQUESTED, before the limit is applied)."""
        with self._lock:
            connection = self._open.get(association)
            if connection is None or connection.released:
                return
            self._pending.pop(connection.socket, None)
            connection.requested = True
        self._count(self._associations, +1)

    def closed(self, association: Association) -> None:
        """Give the connection back (EVT_CONN_CLOSE or the end of its thread; once)."""
        with self._lock:
            connection = self._open.pop(association, None)
            if connection is None:
                return
            connection.released = True
            self._pending.pop(connection.socket, None)
        self._count(self._loads, -1)
        if connection.requested:
            self._count(self._associations, -1)
        metrics.OPEN_ASSOCIATIONS.dec()

    def _count(self, counts: SharedCounts, change: int) -> None:
        with self._count_lock:
            counts[self._slot] += change


def _shut_down(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by its own thread
