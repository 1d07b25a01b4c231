"""The File Meta Information group (PS3.10 7.1) written in front of each received dataset.

Its layout is fixed (explicit VR little endian, six elements), and building it through
pydicom's Dataset machinery cost more than the rest of the ingest path together, so it is
encoded here directly; tests read it back with pydicom.
"""

from __future__ import annotations

import struct
from io import BytesIO

from pydicom.dataset import FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

PREAMBLE = b"\x00" * 128 + b"DICM"
IMPLEMENTATION_CLASS_UID = str(PYDICOM_IMPLEMENTATION_UID)
IMPLEMENTATION_VERSION_NAME = "DICOM_AI_NODE_1"


def _padded(value: str, pad: bytes) -> bytes:
    data = value.encode("ascii")
    return data + pad if len(data) % 2 else data


def _short(element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def encode_file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str = ""
) -> bytes:
    """The preamble, `DICM` prefix and meta group for one stored instance."""
    body = b"".join(
        [
            struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01",
            _short(0x0002, b"UI", _padded(sop_class_uid, b"\x00")),
            _short(0x0003, b"UI", _padded(sop_instance_uid, b"\x00")),
            _short(0x0010, b"UI", _padded(transfer_syntax_uid, b"\x00")),
            _short(0x0012, b"UI", _padded(IMPLEMENTATION_CLASS_UID, b"\x00")),
            _short(0x0013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME, b" ")),
            _short(0x0016, b"AE", _padded(source_ae, b" ")) if source_ae else b"",
        ]
    )
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return PREAMBLE + group_length + body


def read_file_meta(data: bytes | bytearray) -> tuple[FileMetaDataset, int]:
    """The file meta group of PS3.10 file bytes and the offset where the dataset starts.

    Raises pydicom's InvalidDicomError without the `DICM` prefix, and ValueError, EOFError or
    AttributeError for a damaged group.
    """
    stream = BytesIO(data)
    read_preamble(stream, False)
    meta = _read_file_meta_info(stream)
    return meta, stream.tell()
