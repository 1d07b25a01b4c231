"""Checking a received dataset and reading the attributes the index needs, without decoding pixels.

pydicom silently accepts a dataset cut in the middle of an element, so the top-level element
stream is walked here and every value length is checked against the bytes actually received.
Only the few values the index needs are decoded, straight from the raw element bytes: on the
ingest path this is several times cheaper than building pydicom DataElements. Pixel data is
never decompressed or re-encoded.
"""

from __future__ import annotations

import re
import struct
import zlib
from io import BytesIO
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.dataelem import RawDataElement
from pydicom.filereader import ENCODED_VR, EXPLICIT_VR_LENGTH_32, data_element_generator
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from ..index.rows import InstanceAttributes

_UNDEFINED = 0xFFFFFFFF
#: Wanted values longer than this (PixelData: only its length is checked) are skipped, not
#: copied; a skipped value that runs past the end still shows in the stream position.
_DEFER_BYTES = 1 << 16
_PIXEL_DATA = Tag(0x7FE0, 0x0010)
_CHARACTER_SET = Tag(0x0008, 0x0005)
_SEQUENCE_DELIMITER_LE = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_SEQUENCE_DELIMITER_BE = b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"
_PN_DELIMITERS = {0x5E, 0x3D}  # ^ and =
_NATIVE_SYNTAXES = {
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
}

#: InstanceAttributes field -> the keyword it is read from; integers are IS values.
_INDEXED = {
    "sop_class_uid": "SOPClassUID",
    "sop_instance_uid": "SOPInstanceUID",
    "study_instance_uid": "StudyInstanceUID",
    "series_instance_uid": "SeriesInstanceUID",
    "instance_number": "InstanceNumber",
    "patient_id": "PatientID",
    "issuer_of_patient_id": "IssuerOfPatientID",
    "patient_name": "PatientName",
    "patient_birth_date": "PatientBirthDate",
    "patient_sex": "PatientSex",
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "accession_number": "AccessionNumber",
    "study_id": "StudyID",
    "study_description": "StudyDescription",
    "referring_physician_name": "ReferringPhysicianName",
    "modality": "Modality",
    "series_number": "SeriesNumber",
    "series_description": "SeriesDescription",
    "body_part_examined": "BodyPartExamined",
    "series_date": "SeriesDate",
    "series_time": "SeriesTime",
}
_INTEGER_FIELDS = {"instance_number", "series_number"}
#: Attributes decoded on ingest: the index columns and the pixel geometry checked below.
_TEXT_KEYWORDS = (*_INDEXED.values(), "NumberOfFrames")
_US_KEYWORDS = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel")
_TAGS = {keyword: Tag(keyword) for keyword in _TEXT_KEYWORDS + _US_KEYWORDS}
_WANTED: list[BaseTag | int] = sorted({*_TAGS.values(), _CHARACTER_SET, _PIXEL_DATA})
_PERSON_NAMES = {"PatientName", "ReferringPhysicianName"}


class MalformedDataset(ValueError):
    """The received bytes are not a complete, parseable DICOM dataset."""


#: PS3.5 9.1: digits and dots, at most 64 characters. Components with a leading zero, which
#: the standard forbids, are tolerated (pydicom's UID.is_valid is not): modalities send them.
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def is_uid(value: str) -> bool:
    """Whether `value` can be a UID: nothing that could be a path, a pattern or a new line."""
    return len(value) <= 64 and _UID.fullmatch(value) is not None


class DatasetTooLarge(ValueError):
    """A deflated dataset inflates to more than the node accepts."""


class ReceivedDataset:
    """The checked top-level elements of a received dataset, decoded on demand."""

    def __init__(self, elements: dict, little_endian: bool, total_length: int) -> None:
        self._elements = elements
        self._little_endian = little_endian
        self.total_length = total_length
        charset = self._ascii(_CHARACTER_SET)
        try:
            self._encodings = convert_encodings(charset.split("\\") if charset else None)
        except Exception:
            self._encodings = convert_encodings(None)

    def _raw(self, tag: BaseTag) -> bytes | None:
        element = self._elements.get(tag)
        if not isinstance(element, RawDataElement) or element.value is None:
            return None
        return element.value

    def _ascii(self, tag: BaseTag) -> str:
        value = self._raw(tag)
        return value.decode("ascii", "replace").strip(" \x00") if value else ""

    def text(self, keyword: str) -> str:
        value = self._raw(_TAGS[keyword])
        if not value:
            return ""
        delimiters = _PN_DELIMITERS if keyword in _PERSON_NAMES else set()
        try:
            return decode_bytes(value, self._encodings, delimiters).strip(" \x00")
        except Exception:
            return value.decode("latin-1").strip(" \x00")

    def integer(self, keyword: str) -> int | None:
        text = self.text(keyword).split("\\")[0].strip()
        try:
            return int(text) if text else None
        except ValueError:
            return None

    def unsigned_short(self, keyword: str) -> int | None:
        value = self._raw(_TAGS[keyword])
        if not value or len(value) < 2:
            return None
        return struct.unpack("<H" if self._little_endian else ">H", value[:2])[0]

    def pixel_data_length(self) -> int | None:
        element = self._elements.get(_PIXEL_DATA)
        return None if element is None else element.length


def _plain_dataset(
    raw: bytes, transfer_syntax: UID, max_inflated: int | None
) -> tuple[bytes, bool, bool]:
    try:
        implicit, little = transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian
        deflated = transfer_syntax.is_deflated
    except ValueError:
        # A syntax newer than pydicom (e.g. Deflated Image Frame Compression): every transfer
        # syntax defined after the original three encodes its dataset in explicit VR little
        # endian (PS3.5 Section 10), which is all this walk needs.
        implicit, little, deflated = False, True, False
    if deflated:
        raw = _inflate(raw, max_inflated)
    return raw, implicit, little


def _inflate(raw: bytes, limit: int | None) -> bytes:
    """`raw` inflated, never past `limit` bytes (a few kB of zlib can inflate to gigabytes)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        data = inflater.decompress(raw, 0 if limit is None else limit + 1)
    except zlib.error as error:
        raise MalformedDataset(f"deflated dataset does not inflate: {error}") from None
    if limit is not None and (len(data) > limit or inflater.unconsumed_tail):
        raise DatasetTooLarge(f"deflated dataset inflates to more than {limit} bytes")
    return data


def parse_dataset(
    raw: bytes, transfer_syntax: UID, max_inflated: int | None = None
) -> ReceivedDataset:
    """Walk `raw` (encoded in `transfer_syntax`) and check that every element is complete.

    Raises MalformedDataset naming the first element that is cut short or unparseable, and
    DatasetTooLarge when a deflated `raw` inflates to more than `max_inflated` bytes.
    """
    data, implicit, little = _plain_dataset(raw, transfer_syntax, max_inflated)
    if not data:
        raise MalformedDataset("the dataset is empty")
    elements: dict[int, Any] = {}
    _walk(data, implicit, little, elements)
    return ReceivedDataset(elements, little, len(data))


_WANTED_TAGS = frozenset(int(tag) for tag in _WANTED)  # ints: BaseTag compares in Python
_EXPLICIT_VRS = frozenset(vr for vr in ENCODED_VR if len(vr) == 2)
_LONG_LENGTH_VRS = frozenset(vr.encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_CHARSET_TAG = 0x00080005
#: Sequences nested deeper than this are left to pydicom (which refuses the deepest ones).
_MAX_DEPTH = 64
_ELEMENT_HEADERS = {
    (implicit, little): struct.Struct(("<" if little else ">") + ("HHL" if implicit else "HH2sH"))
    for implicit in (True, False)
    for little in (True, False)
}
#: an item's or a delimiter's header (PS3.5 7.5: no VR in any transfer syntax)
_ITEM_HEADERS = {True: struct.Struct("<HHL"), False: struct.Struct(">HHL")}
_LONG_LENGTHS = {True: struct.Struct("<L"), False: struct.Struct(">L")}


class _Unusual(Exception):
    """Input the plain walk leaves to pydicom (whose handling of it the node keeps)."""


def _walk(data: bytes, implicit: bool, little: bool, elements: dict[int, Any]) -> None:
    """Every top-level element of `data` checked, the wanted ones kept in `elements`.

    Element headers are read here, as pydicom's `data_element_generator` reads them, and
    undefined lengths are followed item by item to their delimiter: about a third of the cost
    of pydicom, which builds a Dataset for every sequence item, on the ingest path. What this
    does not expect (an unknown VR, an item tag at the top level, a value of undefined length
    that is not made of items or is UN, fewer bytes left than a header) is read by pydicom
    itself from that element on (`_walk_with_pydicom`); tests check that the two agree.
    """
    size = len(data)
    position = 0
    while position < size:
        try:
            tag, vr, length, value_at = _element_header(data, position, implicit, little)
            if tag >> 16 == 0xFFFE:
                raise _Unusual  # an item or a delimiter where an element belongs
            end = (
                _end_of_items(data, value_at, implicit, little, 0)
                if length == _UNDEFINED
                else value_at + length
            )
        except _Unusual:
            position = _walk_with_pydicom(data, position, implicit, little, elements)
            continue
        if end > size:
            if tag in _WANTED_TAGS:
                raise MalformedDataset(
                    f"truncated: {Tag(tag)} declares {length} bytes, the dataset ends first"
                )
            raise MalformedDataset("truncated: an element runs past the end of the dataset")
        if tag in _WANTED_TAGS:
            kept = length != _UNDEFINED and (length <= _DEFER_BYTES or tag == _CHARSET_TAG)
            elements[tag] = RawDataElement(
                BaseTag(tag),
                None if vr is None else vr.decode("ascii"),
                length,
                data[value_at:end] if kept else None,
                value_at,
                implicit,
                little,
            )
        position = end


def _element_header(
    data: bytes, position: int, implicit: bool, little: bool
) -> tuple[int, bytes | None, int, int]:
    """The tag, VR (None in implicit VR), value length and value offset of the element at
    `position`."""
    if len(data) - position < 12:
        raise _Unusual
    if implicit:
        group, number, length = _ELEMENT_HEADERS[(True, little)].unpack_from(data, position)
        return group << 16 | number, None, length, position + 8
    group, number, vr, length = _ELEMENT_HEADERS[(False, little)].unpack_from(data, position)
    if vr not in _EXPLICIT_VRS:
        raise _Unusual
    if vr not in _LONG_LENGTH_VRS:
        return group << 16 | number, vr, length, position + 8
    length = _LONG_LENGTHS[little].unpack_from(data, position + 8)[0]
    if length == _UNDEFINED and vr == b"UN":
        raise _Unusual  # a sequence whose items are in implicit VR (PS3.5 6.2.2)
    return group << 16 | number, vr, length, position + 12


def _item_header(data: bytes, position: int, little: bool) -> tuple[int, int]:
    """The tag and length of the item or delimiter at `position`."""
    if len(data) - position < 8:
        raise _Unusual
    group, number, length = _ITEM_HEADERS[little].unpack_from(data, position)
    return group << 16 | number, length


def _end_of_items(data: bytes, position: int, implicit: bool, little: bool, depth: int) -> int:
    """The end of a value of undefined length starting at `position` (a sequence, or the
    fragments of encapsulated pixel data): its items followed to the sequence delimiter."""
    if depth > _MAX_DEPTH:
        raise _Unusual
    while True:
        tag, length = _item_header(data, position, little)
        position += 8
        if tag == _SEQUENCE_END:
            return position
        if tag != _ITEM:
            raise _Unusual
        if length == _UNDEFINED:
            position = _end_of_item(data, position, implicit, little, depth)
        elif (position := position + length) > len(data):
            raise _Unusual


def _end_of_item(data: bytes, position: int, implicit: bool, little: bool, depth: int) -> int:
    """The end of an item of undefined length whose elements start at `position`."""
    while True:
        if _item_header(data, position, little)[0] == _ITEM_END:
            return position + 8
        _, _, length, value_at = _element_header(data, position, implicit, little)
        if length == _UNDEFINED:
            position = _end_of_items(data, value_at, implicit, little, depth + 1)
        elif (position := value_at + length) > len(data):
            raise _Unusual


def _walk_with_pydicom(
    data: bytes, position: int, implicit: bool, little: bool, elements: dict[int, Any]
) -> int:
    """The elements of `data` from `position` on read by pydicom and checked, the wanted ones
    kept in `elements`; returns the end of the dataset."""
    delimiter = _SEQUENCE_DELIMITER_LE if little else _SEQUENCE_DELIMITER_BE
    stream = BytesIO(data)
    stream.seek(position)
    size = len(data)
    try:
        elements_read = data_element_generator(
            stream, implicit, little, defer_size=_DEFER_BYTES, specific_tags=_WANTED
        )
        for element in elements_read:
            end = stream.tell()
            length = getattr(element, "length", None)
            if length == _UNDEFINED:
                if data[end - 8 : end] != delimiter:
                    raise MalformedDataset(
                        f"truncated: {element.tag} (undefined length) has no sequence delimiter"
                    )
            elif end > size or (isinstance(element.value, bytes) and len(element.value) != length):
                raise MalformedDataset(
                    f"truncated: {element.tag} declares {length} bytes, the dataset ends first"
                )
            elements[element.tag] = element
    except MalformedDataset:
        raise
    except Exception as error:  # pydicom raises many types on garbage input
        raise MalformedDataset(f"cannot parse dataset: {error}") from None
    if stream.tell() > size:
        raise MalformedDataset("truncated: an element runs past the end of the dataset")
    return size


def instance_attributes(dataset: ReceivedDataset) -> InstanceAttributes:
    """The indexed attributes of `dataset`; UIDs are returned as found (possibly empty)."""
    values: dict[str, Any] = {
        field: dataset.integer(keyword) if field in _INTEGER_FIELDS else dataset.text(keyword)
        for field, keyword in _INDEXED.items()
    }
    return InstanceAttributes(
        **values,
        rows=dataset.unsigned_short("Rows"),
        columns=dataset.unsigned_short("Columns"),
        bits_allocated=dataset.unsigned_short("BitsAllocated"),
        number_of_frames=dataset.integer("NumberOfFrames"),
    )


def check_native_pixel_length(dataset: ReceivedDataset, transfer_syntax: UID) -> None:
    """Reject native (uncompressed) pixel data shorter than its declared geometry."""
    actual = dataset.pixel_data_length()
    if actual is None or actual == _UNDEFINED or transfer_syntax not in _NATIVE_SYNTAXES:
        return
    rows = dataset.unsigned_short("Rows")
    columns = dataset.unsigned_short("Columns")
    bits = dataset.unsigned_short("BitsAllocated")
    if not rows or not columns or not bits or bits == 1:
        return  # geometry absent, or bit-packed: nothing simple to compare with
    samples = dataset.unsigned_short("SamplesPerPixel") or 1
    frames = dataset.integer("NumberOfFrames") or 1
    expected = rows * columns * samples * frames * bits // 8
    if actual < expected:
        raise MalformedDataset(
            f"truncated: PixelData holds {actual} bytes, its geometry needs {expected}"
        )
