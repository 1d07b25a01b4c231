"""Hot spots of pynetdicom's associations, tuned for the node's ingest and sending paths.

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

Sending: the socket sends each PDU at once (TCP_NODELAY), as Orthanc's and DCMTK's do. Every
DIMSE message leaves from the thread that sends it, straight to the socket (see `_DirectSender`;
when no handler watches the DIMSE messages sent): responses to C-STORE, C-FIND, C-GET, C-MOVE and
C-ECHO and C-STORE requests with their command set packed by `command_set` and their data set
cut into PDUs here, other messages as pynetdicom encodes them. The same holds for the
associations the node requests (`install_requestor`).
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pynetdicom.association
from pynetdicom import _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse import _RQ_TO_MESSAGE, _RSP_TO_MESSAGE
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from . import reading
from .command_set import encode_response, encode_store_request

# A file the node gives pynetdicom to send (a delivery, a C-MOVE or C-GET sub-operation) goes
# as stored, read in fragments, never decoded: the node passes a path only where the peer
# accepted the file's own transfer syntax.
_config.STORE_SEND_CHUNKED_DATASET = True

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
    nap is skipped in the thread of a tuned acceptor association (its message queue waits
    instead, so the loop does not spin), and ends early in a tuned requestor's (`_Checkpoint`).
    Every other sleep, and every other association's, is kept."""

    _LOOP = Association._run_reactor.__code__

    def __getattr__(self, name: str):
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        caller = sys._getframe(1).f_code
        thread = threading.current_thread()
        if caller is self._LOOP and isinstance(thread, Association):
            if isinstance(thread.dimse.msg_queue, _MessageQueue):
                return
            checkpoint = thread._reactor_checkpoint
            if isinstance(checkpoint, _Checkpoint):
                checkpoint.nap(seconds)
                return
        time.sleep(seconds)


class _Checkpoint(threading.Event):
    """The reactor checkpoint of an association the node requested. pynetdicom pauses the
    association's loop before each request it sends (the response must not be taken by the
    loop) and waits, polling, until the loop has noticed, which it did after its nap: up to
    a millisecond before each C-STORE. Clearing this checkpoint ends the nap."""

    def __init__(self) -> None:
        super().__init__()
        self.set()
        self._nap_over = threading.Event()

    def clear(self) -> None:
        super().clear()
        self._nap_over.set()

    def nap(self, seconds: float) -> None:
        """The loop's nap, over at once when a request is about to be sent."""
        self._nap_over.wait(seconds)
        self._nap_over.clear()


def describe_messages(level: str) -> None:
    """pynetdicom's standard handlers describe every PDU and DIMSE message (copying each
    received dataset to see whether it is empty) for log lines only DEBUG shows; bound to an
    association, they also keep its messages going through pynetdicom (`_send_directly`).
    They are bound to the associations made from now on only at that `level`."""
    _config.LOG_HANDLER_LEVEL = "standard" if level == "DEBUG" else "none"


def install(association: Association, max_dataset_bytes: int) -> None:
    """Tune a new acceptor association (on EVT_CONN_OPEN: its threads have not started)."""
    _use_reactor_time()
    reading.install(association, max_dataset_bytes)
    _send_without_delay(association)
    _wait_for_the_socket(association)
    messages = _MessageQueue()
    association.dimse.msg_queue = _carried_over(association.dimse.msg_queue, messages)
    association.dul.to_user_queue = _carried_over(
        association.dul.to_user_queue, _UserQueue(messages)
    )
    if not association.get_handlers(evt.EVT_DIMSE_SENT):
        _send_directly(association)


def install_requestor(association: Association) -> None:
    """Tune an association this node requested (C-STORE to a peer: an outbox delivery, a
    C-MOVE's sub-operations, `dicom-node send`), once established, before its first request
    (the peer has nothing to send the DUL meanwhile). Its DUL napped a millisecond before
    noticing each C-STORE-RSP, and each PDU went to the socket through the DUL thread (16 kB
    ones where the peer asks for that, as Orthanc and DCMTK do): a 300-slice CT went out at
    144 instances/s where DCMTK's storescu sends 1,000."""
    _use_reactor_time()
    _send_without_delay(association)
    _wait_for_the_socket(association)
    association._reactor_checkpoint = _Checkpoint()  # the loop waits on no other: it is set
    if not association.get_handlers(evt.EVT_DIMSE_SENT):
        _send_directly(association)


def _use_reactor_time() -> None:
    if not isinstance(pynetdicom.association.time, _ReactorTime):
        pynetdicom.association.time = _ReactorTime("time")


def _wait_for_the_socket(association: Association) -> None:
    """The DUL waits on its socket and on the primitives queued for it, not in naps."""
    woken, wake = socket.socketpair()
    woken.setblocking(False)
    wake.setblocking(False)
    dul = association.dul
    dul.to_provider_queue = _carried_over(dul.to_provider_queue, _OutgoingQueue(wake))
    dul.event_queue = _carried_over(dul.event_queue, _DulEventQueue(association, woken))
    dul._run_loop_delay = 0  # the event queue's wait takes the nap's place
    _stop_promptly(association, wake)


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


def _send_directly(association: Association) -> None:
    dimse = association.dimse
    sender = _DirectSender(association)

    def send(primitive, context_id: int) -> None:
        """Like DIMSEServiceProvider.send_msg, each P-DATA handed to `sender`."""
        for pdata in message_p_data(primitive, context_id, dimse.maximum_pdu_size):
            sender.send(pdata)

    dimse.send_msg = send  # type: ignore[method-assign]  # on purpose, for this association


def message_p_data(primitive, context_id: int, limit: int) -> Iterator[P_DATA]:
    """The P-DATA of a DIMSE message, for PDUs of at most `limit` bytes (0: any size), as
    pynetdicom's send_msg makes them: the command set of a response or C-STORE request that
    `command_set` packs, then its data set (a match, failed instances, a stored file) in
    fragments as pynetdicom cuts them; any other message as pynetdicom encodes it. A stored
    file that cannot be read fails before the command leaves (pynetdicom opens it after), so
    the peer is never left waiting for a data set."""
    command = encode_response(primitive) or encode_store_request(primitive)
    if command is None or (limit and len(command) + 6 > limit):
        yield from _message(primitive).encode_msg(context_id, limit)
        return
    fragments = _data_set_fragments(primitive, limit - 6 if limit else 0)
    first = next(fragments, None)
    yield _pdata(context_id, b"\x03" + command)
    if first is None:
        return
    for fragment, last in itertools.chain([first], fragments):
        yield _pdata(context_id, (b"\x02" if last else b"\x00") + fragment)


def _pdata(context_id: int, value: bytes) -> P_DATA:
    pdata = P_DATA()
    pdata.presentation_data_value_list.append((context_id, value))
    return pdata


def _data_set_fragments(primitive, size: int) -> Iterator[tuple[bytes, bool]]:
    """The data set of a C-FIND, C-GET or C-MOVE response (a match, the failed instances) or
    of a C-STORE-RQ (in memory, or the rest of a stored file from an offset) in fragments of
    `size` bytes (0: whole), each with whether it is the last."""
    if isinstance(primitive, C_FIND | C_GET | C_MOVE):
        data = primitive.Identifier
    elif isinstance(primitive, C_STORE) and primitive.MessageIDBeingRespondedTo is None:
        data = primitive.DataSet
        if data is None and primitive._dataset_path is not None:
            yield from _file_fragments(primitive._dataset_path, size)
            return
    else:
        return
    value = data.getvalue() if data is not None else b""
    if not value:
        return
    step = size or len(value)
    for start in range(0, len(value), step):
        yield value[start : start + step], start + step >= len(value)


def _file_fragments(location: Path | tuple[Path, int], size: int) -> Iterator[tuple[bytes, bool]]:
    path, offset = location if isinstance(location, tuple) else (location, 0)
    with open(path, "rb") as stream:
        left = stream.seek(0, 2) - stream.seek(offset)
        while True:
            fragment = stream.read(size or left)
            left -= len(fragment)
            if left <= 0 or not fragment:
                yield fragment, True
                return
            yield fragment, False


def _message(primitive) -> DIMSEMessage:
    """The DIMSE message of `primitive`, as pynetdicom's send_msg builds it."""
    if primitive.MessageIDBeingRespondedTo is None:
        message = _RQ_TO_MESSAGE[type(primitive)]()
    else:
        message = _RSP_TO_MESSAGE[type(primitive)]()
    message.primitive_to_message(primitive)
    return message


class _DirectSender:
    """Sends a message's P-DATA from the thread that sends the message (the association's
    own, or the caller's for an association the node requested). Handed to the DUL thread
    (its queue, a wake-up, its state machine), each PDU cost a switch between threads. Done
    here only while the association is established (Sta6, where sending P-DATA changes no
    state) and nothing has ever gone through the DUL's queue since (`queued`), so PDUs keep
    their order; the DUL thread's own sends (a release, an abort) take the same lock, so none
    interleave on the socket. With a handler watching sent PDUs, every PDU goes through the DUL
    as pynetdicom sends it; so does every PDU of a TLS association (OpenSSL must not read and
    write one connection from two threads at once)."""

    def __init__(self, association: Association) -> None:
        self._dul = association.dul
        transport = self._dul.socket
        assert transport is not None  # connected: on EVT_CONN_OPEN, or established
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
