"""How an acceptor association reads from its peer: in large chunks, within time and size bounds.

pynetdicom reads a PDU as a 6-byte header, then (for a known PDU type) a body of the length
the header declares, from a socket that has no timeout: 20 bytes of an association request
then silence hold the connection (and its association slot) for as long as the peer keeps it
open, and a 1 GB PDU is buffered whole. The reader installed here

- takes what the kernel has, up to 1 MB per read (pynetdicom takes 4 KB: over a hundred
  trips through the GIL for one CT slice), straight into the buffer it returns;
- on a plain (not TLS) socket, reads what is already there with one readv() call: a socket
  with a timeout polls before every recv(), and setting the timeout again (an ioctl) before
  each read cost as much; only when nothing is there does it wait, with the timeout. Each
  system call releases the GIL, and in a process serving several associations nearly every
  release hands the GIL to another thread (about a hundred futex calls per stored instance);
- gives the whole association request the ACSE timeout, and each read after it the network
  timeout; a read that runs out ends as a closed connection does;
- refuses a PDU longer than the node accepts when its header arrives, before reading it: an
  A-ABORT (service provider, invalid PDU parameter value), then the connection is closed;
- hands a P-DATA-TF's values to the DIMSE layer as views of the bytes read, where pynetdicom
  made four copies of each received dataset first (about a tenth of a stored instance's CPU).

A P-DATA whose content pynetdicom cannot decode killed pynetdicom's reader thread; it now
aborts the association (Evt19, an invalid PDU, as pynetdicom does for an undecodable DIMSE
message). A message's dataset is bounded by `dicom.max_dataset_bytes`: past it the rest is
counted and dropped, and the C-STORE handler answers Out of Resources.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import struct
import time
from io import BytesIO

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF, _PDUType
from pynetdicom.pdu_items import PresentationDataValueItem
from pynetdicom.pdu_primitives import P_DATA

from .. import metrics

log = logging.getLogger(__name__)

_RECV_CHUNK = 1 << 20
_HEADER = struct.Struct(">BBL")
_PDU_TYPES = range(0x01, 0x08)  # the ones pynetdicom reads a body for
_P_DATA_TF = 0x04
_ITEM_LENGTH = struct.Struct(">L")
#: Before the association is established (an A-ASSOCIATE-RQ: contexts, user identity).
_LARGEST_ASSOCIATION_PDU = 1 << 20
#: Beside a dataset in an unlimited PDU: PDV item headers and a command set.
_COMMAND_ALLOWANCE = 1 << 16
_INVALID_PDU_PARAMETER_VALUE = 0x06


class BoundedDataset(BytesIO):
    """A received message's dataset; past `limit` bytes, the rest is counted and dropped."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.too_large = False

    def write(self, data) -> int:
        if not self.too_large and self.tell() + len(data) > self.limit:
            self.too_large = True
            self.seek(0)
            self.truncate()
        if self.too_large:
            return len(data)
        return super().write(data)


class _PduReader:
    """Replaces AssociationSocket.recv (which pynetdicom's DUL alone calls)."""

    def __init__(self, association: Association, max_dataset_bytes: int) -> None:
        self._association = association
        # On EVT_CONN_OPEN an acceptor association has its connected socket and its peer's
        # address; the node's AE gives it an ACSE timeout (dicom.acse_timeout).
        transport, address = association.dul.socket, association.requestor.address_info
        assert transport is not None and transport.socket is not None and address is not None
        assert association.acse_timeout is not None
        self._socket = transport.socket
        #: read directly from the descriptor (TLS records must go through the SSL layer)
        self._plain = not isinstance(transport.socket, ssl.SSLSocket)
        self._peer = address.as_tuple[:2]
        self._request_deadline = time.monotonic() + association.acse_timeout
        self._largest_data = max_dataset_bytes + _COMMAND_ALLOWANCE
        self._header_next = True

    def __call__(self, nr_bytes: int) -> bytes | bytearray:
        """`nr_bytes`, or less if the connection closed or its time ran out."""
        data = self._read(nr_bytes)
        if not self._header_next:
            self._header_next = True
            self._acknowledge_now()
        elif len(data) == _HEADER.size:
            pdu_type, _, length = _HEADER.unpack(data)
            if length > self._largest():
                self._refuse(length)
                return b""  # pynetdicom: the connection closed (Evt17)
            self._header_next = pdu_type not in _PDU_TYPES
        return data

    def _acknowledge_now(self) -> None:
        """Acknowledge the PDU just read at once (Linux delays ACKs otherwise): a peer that
        sends a message as two PDUs with Nagle's algorithm on (pynetdicom's SCU: command, then
        identifier) holds the second until the first is acknowledged, 40 ms per C-FIND."""
        with contextlib.suppress(OSError, AttributeError):
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def _read(self, nr_bytes: int) -> bytes | bytearray:
        # Filled in place up to 1 MB at a time: a PDU's declared length is not allocated
        # before its bytes arrive (a header may announce a gigabyte and send nothing).
        pieces = []
        remaining = nr_bytes
        while remaining > 0:
            wanted = min(remaining, _RECV_CHUNK)
            piece = self._read_piece(wanted)
            pieces.append(piece)
            remaining -= len(piece)
            if len(piece) < wanted:  # closed, or the time ran out
                break
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _read_piece(self, nr_bytes: int) -> bytearray:
        buffer = bytearray(nr_bytes)
        filled = 0
        with memoryview(buffer) as view:
            while filled < nr_bytes:
                count = self._read_into(view[filled:])
                if not count:
                    break
                filled += count
        del buffer[filled:]
        return buffer

    def _read_into(self, view: memoryview) -> int:
        """Read into `view`; the number of bytes read, 0 if the connection closed or the
        time ran out."""
        # A socket with a timeout has a non-blocking descriptor: readv() never waits.
        if self._plain and self._socket.gettimeout() is not None:
            try:
                return os.readv(self._socket.fileno(), [view])
            except BlockingIOError:
                pass  # nothing there yet: wait for it below
        timeout = self._timeout()
        if timeout <= 0:
            self._timed_out()
            return 0
        if timeout != self._socket.gettimeout():
            self._socket.settimeout(timeout)
        try:
            return self._socket.recv_into(view)
        except TimeoutError:
            self._timed_out()
            return 0

    def _timeout(self) -> float:
        if self._association.is_established:
            timeout = self._association.network_timeout
            assert timeout is not None  # the node's AE sets one (dicom.network_timeout)
            return timeout
        return self._request_deadline - time.monotonic()

    def _largest(self) -> int:
        if not self._association.is_established:
            return _LARGEST_ASSOCIATION_PDU
        return self._association.acceptor.maximum_length or self._largest_data

    def _timed_out(self) -> None:
        established = self._association.is_established
        log.warning(
            "closing the connection from %s:%s: %s",
            *self._peer,
            "nothing received within the network timeout"
            if established
            else "no complete association request within the ACSE timeout",
        )
        metrics.FAILURES.labels(reason="network_timeout" if established else "acse_timeout").inc()

    def _refuse(self, length: int) -> None:
        log.warning(
            "refused a PDU of %d bytes from %s:%s (limit %d): A-ABORT, connection closed",
            length,
            *self._peer,
            self._largest(),
        )
        metrics.FAILURES.labels(reason="pdu_too_large").inc()
        abort = A_ABORT_RQ()
        abort.source = 0x02
        abort.reason_diagnostic = _INVALID_PDU_PARAMETER_VALUE
        with contextlib.suppress(OSError):
            self._socket.sendall(abort.encode())
            self._socket.shutdown(socket.SHUT_WR)


def install(association: Association, max_dataset_bytes: int) -> None:
    """Bound what a new acceptor association reads (on EVT_CONN_OPEN, before it runs)."""
    transport = association.dul.socket
    assert transport is not None  # connected, on EVT_CONN_OPEN
    # On purpose, for this association. The DUL only appends what recv() returns to its
    # bytearray, so bytes serve as well as the bytearray AssociationSocket.recv is declared with.
    transport.recv = _PduReader(association, max_dataset_bytes)  # type: ignore[method-assign, assignment]
    _abort_undecodable(association, max_dataset_bytes)
    if not association.get_handlers(evt.EVT_DATA_RECV) and not association.get_handlers(
        evt.EVT_PDU_RECV
    ):
        _p_data_in_place(association)


def _p_data_in_place(association: Association) -> None:
    dul = association.dul

    def read() -> None:
        """DULServiceProvider._read_pdu_data, except that a P-DATA-TF's values are views of
        the bytes read: pynetdicom copies a received dataset four times before the DIMSE
        layer (the body appended to the header, `bytes()` of that, a slice for the PDU's
        items, a slice per item). Any other PDU is decoded by pynetdicom."""
        transport = dul.socket
        assert transport is not None  # the DUL reads only from a connected socket
        try:
            header = transport.recv(_HEADER.size)
            if len(header) < _HEADER.size:
                raise EOFError
            pdu_type, _, length = _HEADER.unpack(header)
            if pdu_type not in _PDU_TYPES:
                log.warning("unknown PDU type 0x%02X received: aborting", pdu_type)
                dul.event_queue.put("Evt19")  # invalid PDU: A-ABORT (AA-8)
                return
            body = transport.recv(length)
            if len(body) < length:
                raise EOFError
        except (OSError, TimeoutError, EOFError):
            dul.event_queue.put("Evt17")  # the connection closed
            return
        try:
            pdu: _PDUType
            if pdu_type == _P_DATA_TF:
                pdu, event = _p_data_tf(body), "Evt10"
            else:
                pdu, event = dul._decode_pdu(bytearray(header) + body)
        except Exception as error:  # pynetdicom raises many types on garbage
            log.warning("undecodable PDU of type 0x%02X received (%s): aborting", pdu_type, error)
            dul.event_queue.put("Evt19")
            return
        dul.event_queue.put(event)
        dul._recv_pdu.put(pdu)

    dul._read_pdu_data = read  # type: ignore[method-assign]  # on purpose, this one


def _p_data_tf(body: bytes | bytearray) -> P_DATA_TF:
    """The PDU whose items are in `body` (PS3.8 9.3.5), each value a view of `body`."""
    pdu = P_DATA_TF()
    view = memoryview(body)
    offset = 0
    while offset < len(body):
        if offset + 6 > len(body):
            raise ValueError("a presentation data value item cut short")
        (item_length,) = _ITEM_LENGTH.unpack_from(body, offset)
        end = offset + 4 + item_length
        if item_length < 2 or end > len(body):
            raise ValueError(f"a presentation data value item of {item_length} bytes")
        item = PresentationDataValueItem()
        item.presentation_context_id = body[offset + 4]
        item.presentation_data_value = view[offset + 5 : end]  # type: ignore[assignment]
        pdu.presentation_data_value_items.append(item)
        offset = end
    return pdu


def _abort_undecodable(association: Association, max_dataset_bytes: int) -> None:
    dimse = association.dimse
    receive_primitive = dimse.receive_primitive
    address = association.requestor.address_info
    assert address is not None  # known on EVT_CONN_OPEN
    peer = address.as_tuple[:2]

    def receive(primitive: P_DATA) -> None:
        """Like DIMSEServiceProvider.receive_primitive; what it cannot decode aborts."""
        if dimse.message is None:
            dimse.message = DIMSEMessage()
            dimse.message.data_set = BoundedDataset(max_dataset_bytes)
        try:
            receive_primitive(primitive)
        except Exception as error:  # pydicom and pynetdicom raise many types on garbage
            log.warning(
                "invalid P-DATA from %s:%s (%s): aborting the association",
                *peer,
                type(error).__name__,
            )
            metrics.FAILURES.labels(reason="invalid_p_data").inc()
            dimse.message = None
            association.dul.event_queue.put("Evt19")  # invalid PDU: A-ABORT (AA-8)

    dimse.receive_primitive = receive  # type: ignore[method-assign]  # on purpose, this one
