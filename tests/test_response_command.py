"""The C-STORE, C-FIND and C-ECHO responses packed by the node are the ones pynetdicom would
send, byte for byte."""

from __future__ import annotations

from io import BytesIO

import pytest
from pynetdicom.dimse_messages import C_ECHO_RSP, C_FIND_RSP, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE

from dicom_node.dimse.response_command import encode_response

_MESSAGES = {C_STORE: C_STORE_RSP, C_FIND: C_FIND_RSP, C_ECHO: C_ECHO_RSP}


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
