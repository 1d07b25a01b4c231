"""Two hot spots of pynetdicom's acceptor associations, tuned for the node's ingest path.

Reading: `install` gives the association's socket the node's reader (see `reading`): large
chunks, bounded in time and size.

Waiting: pynetdicom 3.0 runs two polling loops per association: the DUL thread (socket and outgoing
PDUs) and the association thread (complete DIMSE messages). Each naps for a millisecond when it
finds nothing to do, and a C-STORE round trip meets about three such naps: before the request's
first PDU is read, before the complete request is served, before the response is sent. That is
a fifth of a stored instance's time, and on a busy node the idle wake-ups cost CPU too.

`install` also swaps four of the association's queues for ones that wait on what ends the nap:
the DUL's event queue, when empty, waits (bounded) until its socket is readable or a PDU is
queued for sending; the DIMSE message queue, when polled, waits (bounded) for a message or for
the peer's release or abort (the DUL's queue for the association wakes it). The association
loop's own nap (a 1 ms sleep before each look at the message queue) is skipped in these
associations, whose message queue waits instead; it cost a millisecond per instance, more than
a third of a 0.5 MB instance's time. The loops themselves are pynetdicom's, unchanged;
pynetdicom is pinned to the version this was written against (the attributes swapped here are
internal).

Stopping: pynetdicom's `stop_dul` waits for the DUL thread to end by sleeping for the DUL's nap,
which is 0 here: the association thread spun (sleep(0) in a loop) until the DUL's current wait
ended, up to 10 ms, taking a core a waiting peer could use. The DUL is woken instead and joined.

Sending: the socket sends each PDU at once (TCP_NODELAY), as Orthanc's and DCMTK's do.

Answering: C-STORE, C-FIND and C-ECHO responses are sent with their command set packed by
`response_command` (when no handler watches the DIMSE messages sent), from the association's
own thread straight to the socket (see `_DirectSender`); every other message goes through
pynetdicom.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import ssl
import sys
import threading
import time
from types import ModuleType

import pynetdicom.association
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from . import reading
from .response_command import encode_response

#: Longest wait of an idle DUL or association loop: bounds how late timers, release requests
#: and the stop of the association are noticed.
_DUL_WAIT_SECONDS = 0.01
_MESSAGE_WAIT_SECONDS = 0.005


class _OutgoingQueue(queue.Queue):
    """The DUL's queue of primitives to send; every put wakes the DUL thread."""

    def __init__(self, wake: socket.socket) -> None:
        super().__init__()
        self._wake = wake

    def _put(self, item) -> None:
        super()._put(item)
        with contextlib.suppress(OSError):
            self._wake.send(b"\0")


class _DulEventQueue(queue.Queue):
    """The DUL's event queue: an empty non-blocking get waits for the socket or a wake-up."""

    def __init__(self, association: Association, woken: socket.socket) -> None:
        super().__init__()
        self._dul = association.dul
        self._woken = woken

    def get(self, block: bool = True, timeout: float | None = None):
        if block:
            return super().get(block, timeout)
        try:
            return super().get(False)
        except queue.Empty:
            self._wait()
            raise

    def _wait(self) -> None:
        if self._dul.to_provider_queue.qsize():
            return
        watched = [self._woken]
        transport = self._dul.socket
        if transport is not None and transport.socket is not None:
            if isinstance(transport.socket, ssl.SSLSocket) and transport.socket.pending():
                return  # decrypted bytes wait in the TLS buffer: select() cannot see them
            watched.append(transport.socket)
        try:
            readable, _, _ = select.select(watched, [], [], _DUL_WAIT_SECONDS)
        except (OSError, ValueError):  # the socket was closed meanwhile
            return
        if self._woken in readable:
            with contextlib.suppress(OSError):
                self._woken.recv(4096)


class _MessageQueue(queue.Queue):
    """DIMSE messages for the association thread: its non-blocking poll waits a little, until a
    message arrives or the peer's release or abort does (`wake`)."""

    def get(self, block: bool = True, timeout: float | None = None):
        if block:
            return super().get(block, timeout)
        with self.not_empty:
            if not self._qsize():
                self.not_empty.wait(_MESSAGE_WAIT_SECONDS)
            if not self._qsize():
                raise queue.Empty
            item = self._get()
            self.not_full.notify()
            return item

    def wake(self) -> None:
        with self.not_empty:
            self.not_empty.notify_all()


class _UserQueue(queue.Queue):
    """The DUL's primitives for the association (A-RELEASE, A-ABORT): each wakes the
    association thread's poll, which then answers a release at once instead of after its
    wait (5 ms more per association)."""

    def __init__(self, messages: _MessageQueue) -> None:
        super().__init__()
        self._messages = messages

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._messages.wake()


class _ReactorTime(ModuleType):
    """pynetdicom.association's `time` module: the same, except that the association loop's
    nap is skipped in the thread of a tuned association (its message queue waits instead, so
    the loop does not spin). Every other sleep, and every other association's, is kept."""

    _LOOP = Association._run_reactor.__code__

    def __getattr__(self, name: str):
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        caller = sys._getframe(1).f_code
        thread = threading.current_thread()
        if caller is self._LOOP and isinstance(thread, Association):
            if isinstance(thread.dimse.msg_queue, _MessageQueue):
                return
        time.sleep(seconds)


def install(association: Association, max_dataset_bytes: int) -> None:
    """Tune a new acceptor association (on EVT_CONN_OPEN: its threads have not started)."""
    if not isinstance(pynetdicom.association.time, _ReactorTime):
        pynetdicom.association.time = _ReactorTime("time")
    reading.install(association, max_dataset_bytes)
    _send_without_delay(association)
    woken, wake = socket.socketpair()
    woken.setblocking(False)
    wake.setblocking(False)
    dul = association.dul
    dul.to_provider_queue = _carried_over(dul.to_provider_queue, _OutgoingQueue(wake))
    dul.event_queue = _carried_over(dul.event_queue, _DulEventQueue(association, woken))
    dul._run_loop_delay = 0  # the event queue's wait takes the nap's place
    _stop_promptly(association, wake)
    messages = _MessageQueue()
    association.dimse.msg_queue = _carried_over(association.dimse.msg_queue, messages)
    dul.to_user_queue = _carried_over(dul.to_user_queue, _UserQueue(messages))
    if not association.get_handlers(evt.EVT_DIMSE_SENT):
        _answer_directly(association)


def _stop_promptly(association: Association, wake: socket.socket) -> None:
    dul = association.dul

    def stop_dul() -> bool:
        """Like DULServiceProvider.stop_dul, waking the DUL's wait and joining its thread."""
        if dul.state_machine.current_state != "Sta1":
            return False
        dul._kill_thread = True
        with contextlib.suppress(OSError):
            wake.send(b"\0")
        if dul.is_alive() and dul is not threading.current_thread():
            dul.join()
        return True

    dul.stop_dul = stop_dul  # type: ignore[method-assign]  # on purpose, for this association


def _send_without_delay(association: Association) -> None:
    """Turn Nagle's algorithm off: a C-FIND answers with several small PDUs in a row (each
    match, then the final status), and with it each waits for the peer's delayed ACK, about
    40 ms per response on Linux."""
    transport = association.dul.socket
    if transport is not None and transport.socket is not None:
        with contextlib.suppress(OSError):
            transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _answer_directly(association: Association) -> None:
    dimse = association.dimse
    send_msg = dimse.send_msg
    sender = _DirectSender(association)

    def send(primitive, context_id: int) -> None:
        """Like DIMSEServiceProvider.send_msg; a C-STORE-RSP, C-FIND-RSP or C-ECHO-RSP goes
        out as one P-DATA for its command set and, for a match, one for its identifier (as
        pynetdicom sends them when each fits in a PDU)."""
        command = encode_response(primitive)
        identifier = primitive.Identifier if isinstance(primitive, C_FIND) else None
        dataset = identifier.getvalue() if identifier is not None else b""
        limit = dimse.maximum_pdu_size
        if command is None or (limit and max(len(command), len(dataset)) + 6 > limit):
            sender.queued = True
            send_msg(primitive, context_id)
            return
        for flags, fragment in ((b"\x03", command), (b"\x02", dataset)):
            if fragment:
                pdata = P_DATA()
                pdata.presentation_data_value_list.append((context_id, flags + fragment))
                sender.send(pdata)

    dimse.send_msg = send  # type: ignore[method-assign]  # on purpose, for this association


class _DirectSender:
    """Sends an answer's P-DATA from the association's own thread. Handed to the DUL thread
    (its queue, a wake-up through the socket pair, its state machine), each response cost a
    switch between threads. Done here only while the association is established (Sta6, where
    sending P-DATA changes no state) and nothing has ever gone through the DUL's queue since
    (`queued`), so PDUs keep their order; the DUL thread's own sends (a release, an abort) take
    the same lock, so none interleave on the socket. With a handler watching sent PDUs, every
    PDU goes through the DUL as pynetdicom sends it; so does every PDU of a TLS association
    (OpenSSL must not read and write one connection from two threads at once)."""

    def __init__(self, association: Association) -> None:
        self._dul = association.dul
        transport = self._dul.socket
        assert transport is not None  # connected, on EVT_CONN_OPEN
        self.queued = bool(
            association.get_handlers(evt.EVT_PDU_SENT)
            or association.get_handlers(evt.EVT_DATA_SENT)
            or isinstance(transport.socket, ssl.SSLSocket)
        )
        self._lock = threading.Lock()
        self._send_bytes = transport.send

        def locked(data: bytes) -> None:
            with self._lock:
                self._send_bytes(data)

        transport.send = locked  # type: ignore[method-assign, assignment]  # on purpose, this one

    def send(self, pdata: P_DATA) -> None:
        dul = self._dul
        if not self.queued:
            with self._lock:
                if dul.state_machine.current_state == "Sta6" and dul.to_provider_queue.empty():
                    self._send_bytes(P_DATA_TF(pdata).encode())
                    return
        self.queued = True
        dul.send_pdu(pdata)


def _carried_over(old: queue.Queue, new: queue.Queue) -> queue.Queue:
    """`new`, holding what `old` held (the connection's first event is already queued)."""
    with old.mutex:
        new.queue.extend(old.queue)
    return new
