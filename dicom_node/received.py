"""Checking a received dataset and reading the attributes the index needs, without decoding pixels.

pydicom silently accepts a dataset cut in the middle of an element, so the element stream is
walked here and every value length is checked against the bytes actually received. Pixel data
is never decompressed or re-encoded: only element headers are read.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator
from pydicom.tag import Tag
from pydicom.uid import UID

_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = Tag(0x7FE0, 0x0010)
_SEQUENCE_DELIMITER_LE = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_SEQUENCE_DELIMITER_BE = b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"


class MalformedDataset(ValueError):
    """The received bytes are not a complete, parseable DICOM dataset."""


@dataclass(frozen=True)
class InstanceAttributes:
    """What the index records of one instance, read from its header."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    instance_number: int | None
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician_name: str
    modality: str
    series_number: int | None
    series_description: str
    body_part_examined: str
    series_date: str
    series_time: str


def _plain_dataset(raw: bytes, transfer_syntax: UID) -> tuple[bytes, bool, bool]:
    if transfer_syntax.is_deflated:
        try:
            raw = zlib.decompress(raw, -zlib.MAX_WBITS)
        except zlib.error as error:
            raise MalformedDataset(f"deflated dataset does not inflate: {error}") from None
    return raw, transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian


def parse_dataset(raw: bytes, transfer_syntax: UID) -> Dataset:
    """A pydicom Dataset over `raw` (encoded in `transfer_syntax`), checked for completeness.

    Raises MalformedDataset naming the first element that is cut short or unparseable.
    """
    data, implicit, little = _plain_dataset(raw, transfer_syntax)
    if not data:
        raise MalformedDataset("the dataset is empty")
    delimiter = _SEQUENCE_DELIMITER_LE if little else _SEQUENCE_DELIMITER_BE
    stream = BytesIO(data)
    elements = {}
    size = len(data)
    try:
        for element in data_element_generator(stream, implicit, little, defer_size=None):
            end = stream.tell()
            if element.length == _UNDEFINED:
                if data[end - 8 : end] != delimiter:
                    raise MalformedDataset(
                        f"element {element.tag} of undefined length ends without its "
                        "sequence delimiter (dataset truncated)"
                    )
            elif element.value is not None and len(element.value) != element.length:
                raise MalformedDataset(
                    f"element {element.tag} declares {element.length} bytes but only "
                    f"{len(element.value)} were received (dataset truncated)"
                )
            elements[element.tag] = element
            if end > size:
                raise MalformedDataset(f"element {element.tag} runs past the end of the dataset")
    except MalformedDataset:
        raise
    except Exception as error:  # pydicom raises many types on garbage input
        raise MalformedDataset(f"cannot parse dataset: {error}") from None
    if not elements:
        raise MalformedDataset("the dataset holds no elements")
    dataset = Dataset(elements)
    dataset.set_original_encoding(implicit, little, None)
    return dataset


def _text(dataset: Dataset, keyword: str) -> str:
    try:
        value = dataset.get(keyword)
    except Exception:  # an invalid value must not block storage; the index keeps ""
        return ""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(item) for item in value)
    return str(value).strip()


def _integer(dataset: Dataset, keyword: str) -> int | None:
    try:
        value = dataset.get(keyword)
        return int(value) if value not in (None, "") else None
    except Exception:
        return None


def instance_attributes(dataset: Dataset) -> InstanceAttributes:
    """The indexed attributes of `dataset`; UIDs are returned as found (possibly empty)."""
    return InstanceAttributes(
        sop_class_uid=_text(dataset, "SOPClassUID"),
        sop_instance_uid=_text(dataset, "SOPInstanceUID"),
        study_instance_uid=_text(dataset, "StudyInstanceUID"),
        series_instance_uid=_text(dataset, "SeriesInstanceUID"),
        instance_number=_integer(dataset, "InstanceNumber"),
        patient_id=_text(dataset, "PatientID"),
        issuer_of_patient_id=_text(dataset, "IssuerOfPatientID"),
        patient_name=_text(dataset, "PatientName"),
        patient_birth_date=_text(dataset, "PatientBirthDate"),
        patient_sex=_text(dataset, "PatientSex"),
        study_date=_text(dataset, "StudyDate"),
        study_time=_text(dataset, "StudyTime"),
        accession_number=_text(dataset, "AccessionNumber"),
        study_id=_text(dataset, "StudyID"),
        study_description=_text(dataset, "StudyDescription"),
        referring_physician_name=_text(dataset, "ReferringPhysicianName"),
        modality=_text(dataset, "Modality"),
        series_number=_integer(dataset, "SeriesNumber"),
        series_description=_text(dataset, "SeriesDescription"),
        body_part_examined=_text(dataset, "BodyPartExamined"),
        series_date=_text(dataset, "SeriesDate"),
        series_time=_text(dataset, "SeriesTime"),
    )


def check_native_pixel_length(dataset: Dataset, transfer_syntax: UID) -> None:
    """Reject native (uncompressed) pixel data shorter than its declared geometry."""
    if transfer_syntax.is_compressed or _PIXEL_DATA not in dataset:
        return
    try:
        rows = int(dataset.Rows)
        columns = int(dataset.Columns)
        bits = int(dataset.BitsAllocated)
        samples = int(dataset.get("SamplesPerPixel", 1) or 1)
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
    except Exception:
        return  # geometry absent or unreadable: nothing to compare with
    expected = rows * columns * samples * frames * bits // 8 if bits != 1 else None
    if expected is None:
        return
    actual = dataset.get_item(_PIXEL_DATA).length
    if actual < expected:
        raise MalformedDataset(
            f"PixelData holds {actual} bytes but Rows x Columns x SamplesPerPixel x "
            f"NumberOfFrames x BitsAllocated needs {expected} (pixel data truncated)"
        )
