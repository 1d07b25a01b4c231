"""Command sets the node sends most, encoded directly: the responses to C-STORE, C-FIND,
C-GET, C-MOVE and C-ECHO, and the C-STORE request.

pynetdicom builds each command set as a pydicom Dataset and encodes it twice (once to learn the
group length): about 0.27 ms, a tenth of what the node spends on a stored instance, about 0.6 ms
of each C-FIND answer's (a one-result C-FIND sends two responses), a seventh of a C-ECHO
association's Python time (a PACS's verification, often every minute), and a third of what
sending an instance to a peer cost. These command sets are always the same few elements, so
they are packed here in one step, byte for byte as pynetdicom would encode them (the tests
compare the two). Anything unusual (an Offending Element, text that is not ASCII) is left to
pynetdicom.
"""

from __future__ import annotations

import struct

from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE

_ELEMENT_HEADER = struct.Struct("<HHI")  # implicit VR little endian: group, element, length
_US = struct.Struct("<H")
_COMMAND_FIELDS = {C_STORE: 0x8001, C_GET: 0x8010, C_FIND: 0x8020, C_MOVE: 0x8021, C_ECHO: 0x8030}
#: the sub-operation counts of a C-GET or C-MOVE response, in tag order
_COUNTS = {
    0x1020: "NumberOfRemainingSuboperations",
    0x1021: "NumberOfCompletedSuboperations",
    0x1022: "NumberOfFailedSuboperations",
    0x1023: "NumberOfWarningSuboperations",
}
#: responses whose identifier (a match, a list of failed instances) may follow
_WITH_IDENTIFIER = (C_FIND, C_GET, C_MOVE)
_NO_DATASET = 0x0101
_DATASET = 0x0001  # what pynetdicom writes when a data set follows
_STORE_REQUEST = 0x0001


def encode_response(primitive: C_STORE | C_FIND | C_GET | C_MOVE | C_ECHO) -> bytes | None:
    """The command set of a C-STORE-RSP (PS3.7 9.3.1.2), C-FIND-RSP (9.3.2.2), C-GET-RSP
    (9.3.3.2), C-MOVE-RSP (9.3.4.2) or C-ECHO-RSP (9.3.5.2) primitive, or None when this is not
    a plain response of one of them."""
    command_field = _COMMAND_FIELDS.get(type(primitive))
    if command_field is None:
        return None
    if primitive.MessageIDBeingRespondedTo is None or primitive.Status is None:
        return None
    if getattr(primitive, "OffendingElement", None) is not None:  # C-ECHO has none
        return None
    instance_uid = primitive.AffectedSOPInstanceUID if isinstance(primitive, C_STORE) else None
    class_uid, comment = primitive.AffectedSOPClassUID, primitive.ErrorComment
    if not _ascii(class_uid, comment, instance_uid):
        return None
    # pynetdicom's test of an Identifier (a BytesIO) is its presence, not its length.
    has_dataset = isinstance(primitive, _WITH_IDENTIFIER) and primitive.Identifier is not None
    elements = [
        _text(0x0002, class_uid, b"\0"),
        _element(0x0100, _US.pack(command_field)),
        _element(0x0120, _US.pack(primitive.MessageIDBeingRespondedTo)),
        _element(0x0800, _US.pack(_DATASET if has_dataset else _NO_DATASET)),
        _element(0x0900, _US.pack(primitive.Status)),
        _text(0x0902, comment, b" "),
        _text(0x1000, instance_uid, b"\0"),
    ]
    if isinstance(primitive, C_GET | C_MOVE):
        for element, keyword in _COUNTS.items():
            count = getattr(primitive, keyword)
            if count is not None:
                elements.append(_element(element, _US.pack(count)))
    return _command_set(elements)


def _ascii(*texts: str | None) -> bool:
    """Whether every given text is ASCII (what is packed here; pynetdicom encodes the rest)."""
    return all(text is None or str(text).isascii() for text in texts)


def _command_set(elements: list[bytes]) -> bytes:
    """The elements after their group length (0000,0000)."""
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<I", len(body))) + body


def _element(element: int, value: bytes) -> bytes:
    return _ELEMENT_HEADER.pack(0x0000, element, len(value)) + value


def _text(element: int, value: str | None, padding: bytes) -> bytes:
    """A text element padded to even length; absent (b"") when the value is None."""
    if value is None:
        return b""
    encoded = str(value).encode("ascii")
    if len(encoded) % 2:
        encoded += padding
    return _element(element, encoded)


def encode_store_request(primitive: C_STORE) -> bytes | None:
    """The command set of a C-STORE-RQ primitive (PS3.7 9.3.1.1), or None when it is not a
    plain request (a response, text that is not ASCII)."""
    if not isinstance(primitive, C_STORE) or primitive.MessageIDBeingRespondedTo is not None:
        return None
    if primitive.MessageID is None or primitive.Priority is None:
        return None
    class_uid, instance_uid = primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID
    title = primitive.MoveOriginatorApplicationEntityTitle
    if not _ascii(class_uid, instance_uid, title):
        return None
    origin = primitive.MoveOriginatorMessageID
    elements = [
        _text(0x0002, class_uid, b"\0"),
        _element(0x0100, _US.pack(_STORE_REQUEST)),
        _element(0x0110, _US.pack(primitive.MessageID)),
        _element(0x0700, _US.pack(primitive.Priority)),
        _element(0x0800, _US.pack(_DATASET)),
        _text(0x1000, instance_uid, b"\0"),
        _text(0x1030, title, b" "),
        _element(0x1031, _US.pack(origin)) if origin is not None else b"",
    ]
    return _command_set(elements)
