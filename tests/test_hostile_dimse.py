"""Attacks on the DICOM listener over raw sockets: each must get its precise answer, and the
node must still serve a valid sender afterwards and hold every instance it acknowledged."""

from __future__ import annotations

import io
import os
import socket
import struct
import time
import zlib

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification

from .conftest import TRANSFER_SYNTAXES, dcmtk
from .test_store import send_raw, stored_rows

#: Long enough never to fire in a test; a test that needs a timeout sets a short one.
_PATIENT = 30.0
_A_ASSOCIATE_AC, _A_ASSOCIATE_RJ, _P_DATA_TF, _A_ABORT = 0x02, 0x03, 0x04, 0x07
CT_SMALL = TRANSFER_SYNTAXES / "CT_small.dcm"


@pytest.fixture(scope="session")
def database_kind() -> str:
    """The listener does not depend on the index: SQLite only."""
    return "sqlite"


def started(make_node, **dicom):
    node = make_node(dicom={"acse_timeout": _PATIENT, "network_timeout": _PATIENT, **dicom})
    node.start()
    return node


def read_exactly(sock: socket.socket, length: int) -> bytes:
    data = b""
    while len(data) < length:
        chunk = sock.recv(length - len(data))
        if not chunk:
            break
        data += chunk
    return data


def read_pdu(sock: socket.socket) -> tuple[int, bytes] | None:
    """The next PDU's type and body, or None when the node closed the connection."""
    header = read_exactly(sock, 6)
    if len(header) < 6:
        return None
    pdu_type, _, length = struct.unpack(">BBL", header)
    return pdu_type, read_exactly(sock, length)


def closed_after(sock: socket.socket) -> list[int]:
    """The types of the PDUs the node sends until it closes the connection."""
    types = []
    while (pdu := read_pdu(sock)) is not None:
        types.append(pdu[0])
    return types


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(_PATIENT)
    return sock


def association_request(*contexts: tuple[str, str]) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "ATTACKER"
    primitive.called_ae_title = "AI_NODE"
    definitions = []
    for number, (abstract, syntax) in enumerate(contexts):
        context = build_context(abstract, [syntax])
        context.context_id = 2 * number + 1
        definitions.append(context)
    primitive.presentation_context_definition_list = definitions
    length = MaximumLengthNotification()
    length.maximum_length_received = 0
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.3.4"
    primitive.user_information = [length, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def associate(port: int, *contexts: tuple[str, str]) -> socket.socket:
    sock = connect(port)
    sock.sendall(association_request(*contexts))
    answer = read_pdu(sock)
    assert answer is not None and answer[0] == _A_ASSOCIATE_AC, answer
    return sock


def p_data(context_id: int, control: int, payload: bytes) -> bytes:
    """One P-DATA-TF PDU holding one PDV."""
    item = bytes([context_id, control]) + payload
    body = struct.pack(">L", len(item)) + item
    return struct.pack(">BBL", _P_DATA_TF, 0, len(body)) + body


def c_store_request(
    sop_class: str, sop_instance: str, dataset: bytes, context_id: int = 1
) -> bytes:
    command = Dataset()
    command.AffectedSOPClassUID = sop_class
    command.CommandField = 0x0001
    command.MessageID = 7
    command.Priority = 0
    command.CommandDataSetType = 0x0000
    command.AffectedSOPInstanceUID = sop_instance
    encoded = encode(command, True, True)
    command.CommandGroupLength = len(encoded)
    encoded = encode(command, True, True)
    return p_data(context_id, 0x03, encoded) + p_data(context_id, 0x02, dataset)


def store_status(sock: socket.socket, request: bytes) -> int:
    """Send a C-STORE-RQ; the status of the C-STORE-RSP that answers it."""
    sock.sendall(request)
    answer = read_pdu(sock)
    assert answer is not None and answer[0] == _P_DATA_TF, answer
    command = decode(io.BytesIO(answer[1][6:]), True, True)
    assert command.CommandField == 0x8001 and command.MessageIDBeingRespondedTo == 7
    return command.Status


def ct_small() -> tuple[str, str, bytes]:
    """CT_small.dcm re-encoded in implicit VR little endian: class, instance, dataset bytes."""
    dataset = dcmread(CT_SMALL)
    return dataset.SOPClassUID, dataset.SOPInstanceUID, encode(dataset, True, True)


def assert_still_serves(node, acknowledged: frozenset[str] = frozenset()) -> None:
    """DCMTK's echoscu is answered, a pynetdicom C-STORE is stored, and every instance
    acknowledged before is still held."""
    echo = dcmtk("echoscu", "-to", "10", "-aec", "AI_NODE", "127.0.0.1", str(node.port))
    assert echo.returncode == 0, echo.stderr[-2000:]
    meta = dcmread(CT_SMALL, stop_before_pixels=True).file_meta
    status, still_up = send_raw(
        node.port, meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID, CT_SMALL
    )
    assert status.Status == 0x0000 and still_up
    assert set(stored_rows(node)) == {*acknowledged, str(meta.MediaStorageSOPInstanceUID)}


def test_garbage_p_data_is_aborted_and_frees_its_association(make_node):
    node = started(make_node, max_associations=2)
    for _ in range(3):
        with associate(node.port, (Verification, ImplicitVRLittleEndian)) as sock:
            sock.sendall(p_data(1, 0x03, b"\xff" * 40))
            assert closed_after(sock) == [_A_ABORT]
    assert "invalid P-DATA from 127.0.0.1" in node.log()
    assert_still_serves(node)


@pytest.mark.parametrize(
    "items",
    [
        struct.pack(">L", 0),  # an item of no bytes: no context ID, no control header
        struct.pack(">LB", 1, 1),  # a context ID and no control header
        struct.pack(">LBB", 900, 1, 0x03) + b"\0" * 8,  # longer than the PDU holding it
        struct.pack(">LBB", 3, 1, 0x03) + b"\0" + b"\0\0",  # then 2 bytes of a next item
    ],
    ids=["empty", "no-control-header", "overrunning", "cut-short"],
)
def test_p_data_with_broken_items_is_aborted(make_node, items):
    """The node reads P-DATA-TF items itself (views of the bytes read, not pynetdicom's
    copies): each malformed one is an invalid PDU, as pynetdicom's decoder made it."""
    node = started(make_node)
    with associate(node.port, (Verification, ImplicitVRLittleEndian)) as sock:
        sock.sendall(struct.pack(">BBL", _P_DATA_TF, 0, len(items)) + items)
        assert closed_after(sock) == [_A_ABORT]
    assert "undecodable PDU of type 0x04 received" in node.log()
    assert_still_serves(node)


def test_partial_association_requests_are_closed_at_the_acse_timeout(make_node):
    node = started(make_node, max_associations=2, acse_timeout=1.0)
    senders = [connect(node.port) for _ in range(4)]
    for sock in senders:
        sock.sendall(association_request((Verification, ImplicitVRLittleEndian))[:20])
    for sock in senders:
        assert closed_after(sock) == []  # ARTIM expiry in Sta2: closed without a PDU
        sock.close()
    assert_still_serves(node)


def test_idle_connections_take_no_association_slot(make_node):
    node = started(make_node, max_associations=2, max_pending_connections=4)
    idle = [connect(node.port) for _ in range(10)]
    try:
        assert_still_serves(node)
        # the oldest idle connections were closed to make room for newer ones
        assert closed_after(idle[0]) == []
    finally:
        for sock in idle:
            sock.close()
    assert "waiting connections" in node.log()


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_connections_closed_before_a_request_leave_no_thread_behind(make_node):
    """A port probe, a scanner or a load balancer's health check connects and closes without
    an association request. pynetdicom's association thread waited for the request until the
    ACSE timeout (here 30 s) even so: a flood of such connections piled up threads (3,000 in
    23 s), and a sender was then refused. Each thread now ends with its connection."""
    node = started(make_node, workers=1)  # one process: its threads are all of them
    assert node.process is not None
    assert_still_serves(node)  # the threads a node starts on its first association are up
    before = _threads(node.process.pid)
    for _ in range(300):
        connect(node.port).close()
    deadline = time.monotonic() + 10
    while (left := _threads(node.process.pid) - before) > 2:
        assert time.monotonic() < deadline, f"{left} threads of closed connections remain"
        time.sleep(0.1)
    assert_still_serves(node)


def test_pdu_longer_than_the_limit_is_aborted_before_it_is_read(make_node):
    node = started(make_node, max_pdu_size=16384)
    with associate(node.port, (Verification, ImplicitVRLittleEndian)) as sock:
        sock.sendall(struct.pack(">BBL", _P_DATA_TF, 0, 1 << 30) + b"\0" * 64)
        answer = read_pdu(sock)
        assert answer == (_A_ABORT, b"\0\0\x02\x06")  # service provider, invalid parameter
    with connect(node.port) as sock:  # an association request is bounded too
        sock.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFF0))
        assert read_pdu(sock) == (_A_ABORT, b"\0\0\x02\x06")
    log = node.log()
    assert "PDU of 1073741824 bytes from 127.0.0.1" in log
    assert_still_serves(node)


def test_dataset_larger_than_the_bound_fails_and_the_association_goes_on(make_node):
    node = started(make_node, max_dataset_bytes=10_000)
    sop_class, sop_instance, dataset = ct_small()
    with associate(node.port, (sop_class, ImplicitVRLittleEndian)) as sock:
        assert store_status(sock, c_store_request(sop_class, sop_instance, dataset)) == 0xA700
        assert store_status(sock, c_store_request(sop_class, sop_instance, dataset)) == 0xA700
    assert "dataset_too_large" in node.log()
    assert stored_rows(node) == {}
    node.stop()
    node.settings["dicom"]["max_dataset_bytes"] = 1 << 20
    node.start()
    assert_still_serves(node)


def test_deflate_bomb_fails_without_inflating(make_node):
    """The default bounds: a 64 MiB inflation is refused once past `dicom.max_inflated_bytes`
    (here 1 MiB, so that the test stays small), however large `max_dataset_bytes` is."""
    node = started(make_node, max_inflated_bytes=1 << 20)
    dataset = dcmread(CT_SMALL)
    dataset.PixelData = bytes(64 << 20)  # 64 MiB of zeros deflate to about 64 KiB
    dataset.Rows = dataset.Columns = 4096
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = compressor.compress(encode(dataset, False, True)) + compressor.flush()
    bomb += b"\0" * (len(bomb) % 2)
    syntax = DeflatedExplicitVRLittleEndian
    with associate(node.port, (dataset.SOPClassUID, syntax)) as sock:
        status = store_status(
            sock, c_store_request(dataset.SOPClassUID, dataset.SOPInstanceUID, bomb)
        )
        assert status == 0xA700
    assert "inflates to more than 1048576 bytes" in node.log()
    assert_still_serves(node)


_BAD_UIDS = {"": 0xC001, "../../x": 0x0117, "1.2.*": 0x0117, "1.2.3\n4": 0x0117}


def test_bad_sop_instance_uids_fail_and_the_association_goes_on(make_node):
    node = started(make_node)
    sop_class, sop_instance, dataset = ct_small()
    with associate(node.port, (sop_class, ImplicitVRLittleEndian)) as sock:
        for uid, status in _BAD_UIDS.items():
            assert store_status(sock, c_store_request(sop_class, uid, dataset)) == status, uid
        assert store_status(sock, c_store_request(sop_class, sop_instance, dataset)) == 0x0000
    log = node.log()
    assert "1.2.3\n4" not in log  # a new line in a UID cannot forge a log line
    assert "refused (0xC001 uid_missing)" in log and "refused (0x0117 invalid_uid)" in log
    assert [path.name for path in node.storage.rglob("*x*")] == []
    assert_still_serves(node, acknowledged=frozenset({sop_instance}))
