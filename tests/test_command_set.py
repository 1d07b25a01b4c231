"""The C-STORE, C-FIND and C-ECHO responses and the C-STORE requests packed by the node, and the
P-DATA it cuts their data sets into, are the ones pynetdicom would send, byte for byte."""

from __future__ import annotations

from io import BytesIO

import pytest
from pynetdicom.dimse_messages import (
    C_ECHO_RSP,
    C_FIND_RSP,
    C_GET_RSP,
    C_MOVE_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
)
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE

from dicom_node.dimse.command_set import encode_response, encode_store_request
from dicom_node.dimse.tuning import message_p_data

_MESSAGES = {
    C_STORE: C_STORE_RSP,
    C_FIND: C_FIND_RSP,
    C_ECHO: C_ECHO_RSP,
    C_MOVE: C_MOVE_RSP,
    C_GET: C_GET_RSP,
}


def response(kind: type = C_STORE, **values) -> C_STORE | C_FIND | C_ECHO:
    primitive = kind()
    primitive.MessageIDBeingRespondedTo = 7
    for name, value in values.items():
        setattr(primitive, name, value)
    return primitive


def pynetdicom_command(primitive: C_STORE | C_FIND | C_ECHO) -> bytes:
    message = _MESSAGES[type(primitive)]()
    message.primitive_to_message(primitive)
    pdata = next(message.encode_msg(1, 0))
    ((_, pdv),) = pdata.presentation_data_value_list
    assert pdv[0] == 0x03  # the last (only) command fragment
    return pdv[1:]


CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


@pytest.mark.parametrize(
    "values",
    [
        {"AffectedSOPClassUID": CT, "AffectedSOPInstanceUID": "1.2.3.4", "Status": 0x0000},
        {"AffectedSOPClassUID": CT, "AffectedSOPInstanceUID": "1.2.3.45", "Status": 0x0000},
        {
            "AffectedSOPClassUID": CT,
            "AffectedSOPInstanceUID": "1.2.826.0.1.3680043.8.498.1",
            "Status": 0xC000,
            "ErrorComment": "truncated: PixelData holds 10 bytes",
        },
        {"AffectedSOPClassUID": CT, "Status": 0xA700, "ErrorComment": "odd"},
        {"Status": 0xC001, "ErrorComment": ""},
        {"AffectedSOPInstanceUID": "1.2.3", "Status": 0xB000, "MessageIDBeingRespondedTo": 65535},
    ],
)
def test_packed_store_response_equals_pynetdicoms(values):
    primitive = response(C_STORE, **values)
    assert encode_response(primitive) == pynetdicom_command(primitive)


@pytest.mark.parametrize(
    "values",
    [
        {"AffectedSOPClassUID": STUDY_ROOT_FIND, "Status": 0xFF00, "Identifier": BytesIO(b"x")},
        {"AffectedSOPClassUID": STUDY_ROOT_FIND, "Status": 0xFF00, "Identifier": BytesIO()},
        {"AffectedSOPClassUID": STUDY_ROOT_FIND, "Status": 0x0000},
        {"AffectedSOPClassUID": CT + ".1", "Status": 0xA700, "ErrorComment": "Out of resources"},
        {"Status": 0xC000, "ErrorComment": "unsupported key", "MessageIDBeingRespondedTo": 1},
    ],
)
def test_packed_find_response_equals_pynetdicoms(values):
    primitive = response(C_FIND, **values)
    assert encode_response(primitive) == pynetdicom_command(primitive)


@pytest.mark.parametrize(
    "values",
    [
        {"AffectedSOPClassUID": "1.2.840.10008.1.1", "Status": 0x0000},
        {"AffectedSOPClassUID": "1.2.840.10008.1.1", "Status": 0x0122, "ErrorComment": "no"},
        {"Status": 0x0000, "MessageIDBeingRespondedTo": 65535},
    ],
)
def test_packed_echo_response_equals_pynetdicoms(values):
    primitive = response(C_ECHO, **values)
    assert encode_response(primitive) == pynetdicom_command(primitive)


STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
COUNTS = ("Remaining", "Completed", "Failed", "Warning")


def counts(*numbers: int) -> dict:
    return {f"NumberOf{kind}Suboperations": n for kind, n in zip(COUNTS, numbers, strict=True)}


@pytest.mark.parametrize("kind", [C_MOVE, C_GET])
@pytest.mark.parametrize(
    "values",
    [
        {"Status": 0xFF00, **counts(299, 1, 0, 0)},
        {"Status": 0xFF00, **counts(0, 65535, 2, 3)},
        {"Status": 0x0000, "NumberOfCompletedSuboperations": 300, "NumberOfFailedSuboperations": 0},
        {"Status": 0xB000, **counts(0, 298, 2, 0), "Identifier": BytesIO(b"\x08\x00\x58\x11")},
        {"Status": 0xA801, "ErrorComment": "unknown destination"},
        {"Status": 0xFE00, "NumberOfRemainingSuboperations": 5},
    ],
)
def test_packed_retrieve_responses_equal_pynetdicoms(kind, values):
    uid = STUDY_ROOT_MOVE if kind is C_MOVE else STUDY_ROOT_GET
    primitive = response(kind, AffectedSOPClassUID=uid, **values)
    assert encode_response(primitive) == pynetdicom_command(primitive)


def test_unusual_responses_are_left_to_pynetdicom():
    assert encode_response(response(Status=0xC000, ErrorComment="d\u00e9j\u00e0 vu")) is None
    assert encode_response(response(Status=0xA900, OffendingElement=[0x00100010])) is None
    assert encode_response(response(C_FIND, Status=0xC000, OffendingElement=[0x8])) is None
    assert encode_response(response()) is None  # no status yet
    assert encode_response(response(C_ECHO, ErrorComment="\u00e9", Status=0x0110)) is None
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = CT
    assert encode_response(request) is None  # a request, not a response


def store_request(**values) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageID = 5
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.12345"
    primitive.Priority = 2
    primitive.DataSet = BytesIO(b"\x08\x00\x16\x00" * 3)
    for name, value in values.items():
        setattr(primitive, name, value)
    return primitive


def pynetdicom_p_data(primitive, limit: int) -> list:
    """The PDVs pynetdicom's send_msg would send for `primitive`."""
    if primitive.MessageIDBeingRespondedTo is None:
        message = C_STORE_RQ()
    else:
        message = _MESSAGES[type(primitive)]()
    message.primitive_to_message(primitive)
    return [p.presentation_data_value_list for p in message.encode_msg(1, limit)]


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"AffectedSOPInstanceUID": "1.2.3.4"},
        {"MoveOriginatorApplicationEntityTitle": "PACS", "MoveOriginatorMessageID": 3},
        {"MoveOriginatorApplicationEntityTitle": "ODD", "MoveOriginatorMessageID": 65535},
        {"Priority": 0, "MessageID": 65535},
    ],
)
def test_packed_store_request_equals_pynetdicoms(values):
    primitive = store_request(**values)
    command = pynetdicom_p_data(primitive, 0)[0][0][1][1:]
    assert encode_store_request(primitive) == command


def test_unusual_requests_are_left_to_pynetdicom():
    assert encode_store_request(response(Status=0)) is None  # a response
    echo = C_ECHO()
    echo.MessageID = 1
    assert encode_store_request(echo) is None


#: PDU sizes: none, 16 kB (Orthanc's and DCMTK's), and sizes that cut a 1,000-byte data set
#: into whole fragments, into fragments with a short last one, and into one-byte fragments
LIMITS = [0, 16384, 506, 300, 7]


@pytest.mark.parametrize("limit", LIMITS)
@pytest.mark.parametrize("size", [0, 1, 1000])
def test_a_stored_file_is_cut_into_the_p_data_pynetdicom_sends(tmp_path, limit, size):
    """A C-STORE request sent from a file (from the offset past its file meta): its command set
    and data set fragments, flags and order included."""
    path = tmp_path / "instance.dcm"
    path.write_bytes(b"M" * 132 + bytes(range(256)) * 4)
    primitive = store_request(DataSet=None)
    primitive._dataset_path = (path, 132 + 1024 - size)
    mine = [p.presentation_data_value_list for p in message_p_data(primitive, 1, limit)]
    assert mine == pynetdicom_p_data(primitive, limit)


@pytest.mark.parametrize("limit", LIMITS)
def test_data_sets_in_memory_are_cut_as_pynetdicom_cuts_them(limit):
    match = BytesIO(bytes(range(200)) * 3)
    for primitive in (
        store_request(DataSet=BytesIO(bytes(range(256)) * 2)),
        response(C_FIND, AffectedSOPClassUID=STUDY_ROOT_FIND, Status=0xFF00, Identifier=match),
        response(C_FIND, AffectedSOPClassUID=STUDY_ROOT_FIND, Status=0, Identifier=BytesIO()),
        response(C_ECHO, AffectedSOPClassUID="1.2.840.10008.1.1", Status=0),
        response(C_MOVE, AffectedSOPClassUID=STUDY_ROOT_MOVE, Status=0),
        response(
            C_GET,
            AffectedSOPClassUID=STUDY_ROOT_GET,
            Status=0xB000,
            Identifier=BytesIO(bytes(range(100)) * 9),
            **counts(0, 1, 1, 0),
        ),
    ):
        mine = [p.presentation_data_value_list for p in message_p_data(primitive, 1, limit)]
        assert mine == pynetdicom_p_data(primitive, limit), type(primitive).__name__


def test_a_file_that_cannot_be_read_fails_before_the_command_leaves(tmp_path):
    """pynetdicom opens the file after sending the command, leaving the peer waiting for a
    data set that never comes; here nothing is sent."""
    primitive = store_request(DataSet=None)
    primitive._dataset_path = (tmp_path / "gone.dcm", 132)
    with pytest.raises(FileNotFoundError):
        next(message_p_data(primitive, 1, 16384))
