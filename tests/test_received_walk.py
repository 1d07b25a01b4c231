"""The received-dataset walk against pydicom's: `parse_dataset` reads element headers and follows
items itself (the ingest path's speed) and hands whatever it does not expect to pydicom's
element generator. On real files of every shared kind, on each of them cut anywhere and on
mutated ones, it must find what pydicom's walk finds: the same indexed attributes, and a
truncated dataset refused wherever pydicom's walk refuses it."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.uid import UID

from dicom_node.store import received
from dicom_node.store.received import MalformedDataset, instance_attributes, parse_dataset

from .conftest import CT_SERIES, SHARED_DATA
from .test_fuzz import FUZZ

FOLDERS = [
    "dicom_transfer_syntaxes_pydicom",
    "dicom_transfer_syntaxes_dcm_qa_ts",
    "dicom_malformed_pydicom",
    "dicom_sr_seg_examples",
    "cxr_dicom",
]


def _dataset(path: Path) -> tuple[bytes, UID] | None:
    """The dataset of a Part 10 file as a C-STORE carries it, and its transfer syntax."""
    raw = path.read_bytes()
    if raw[128:132] != b"DICM" or raw[132:140] != b"\x02\x00\x00\x00UL\x04\x00":
        return None  # no file meta group to take the transfer syntax from
    meta_end = 144 + struct.unpack("<I", raw[140:144])[0]
    meta = raw[144:meta_end]
    at = meta.find(b"\x02\x00\x10\x00UI")
    if at < 0:
        return None
    length = struct.unpack("<H", meta[at + 6 : at + 8])[0]
    syntax = meta[at + 8 : at + 8 + length].decode("ascii").strip("\0 ")
    return raw[meta_end:], UID(syntax)


def _files() -> list[Path]:
    found = []
    for folder in FOLDERS:
        found += sorted(
            path
            for path in (SHARED_DATA / folder).rglob("*")
            if path.is_file() and path.suffix.lower() in ("", ".dcm")
        )
    return found + sorted(CT_SERIES.glob("*.dcm"))[:3]


DATASETS = {
    str(path.relative_to(SHARED_DATA)): dataset
    for path in _files()
    if (dataset := _dataset(path)) is not None
}


def _outcome(parse, raw: bytes, syntax: UID):
    """What a walk makes of `raw`: the indexed attributes and the pixel data's length, or
    "refused"."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's on odd character sets and VRs
            dataset = parse(raw, syntax)
            return instance_attributes(dataset), dataset.pixel_data_length()
    except MalformedDataset:
        return "refused"


def _with_pydicom(raw: bytes, syntax: UID) -> received.ReceivedDataset:
    """The walk as it was before the node read headers itself: pydicom's from the start."""
    data, implicit, little = received._plain_dataset(raw, syntax, None)
    if not data:
        raise MalformedDataset("the dataset is empty")
    elements: dict = {}
    received._walk_with_pydicom(data, 0, implicit, little, elements)
    return received.ReceivedDataset(elements, little, len(data))


def test_the_shared_files_cover_the_walks_cases():
    syntaxes = {str(syntax) for _, syntax in DATASETS.values()}
    assert len(DATASETS) > 40
    assert {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"} <= syntaxes
    assert "1.2.840.10008.1.2.1.99" in syntaxes  # deflated
    assert any(syntax.startswith("1.2.840.10008.1.2.4") for syntax in syntaxes)  # encapsulated


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_each_shared_file_walks_as_pydicom_walks_it(name):
    raw, syntax = DATASETS[name]
    assert _outcome(parse_dataset, raw, syntax) == _outcome(_with_pydicom, raw, syntax)


@pytest.mark.parametrize("name", [name for name in sorted(DATASETS) if "malformed" not in name])
def test_well_formed_files_never_need_pydicoms_walk(name, monkeypatch):
    """The node's own walk reads every well-formed shared file to its end (nested sequences
    of undefined length, encapsulated pixel data, each byte order): the speed is not lost to
    the fallback on ordinary input."""

    def fallback(*_):
        raise AssertionError("pydicom's walk was needed")

    monkeypatch.setattr(received, "_walk_with_pydicom", fallback)
    raw, syntax = DATASETS[name]
    parse_dataset(raw, syntax)


#: files with sequences of undefined length (nested, in SR), encapsulated pixel data, and
#: each byte order and VR encoding
CUT = [
    name
    for name in sorted(DATASETS)
    if any(
        part in name
        for part in ("CT_small", "MR_small_implicit", "MR_small_bigendian", "JPEG-lossless")
    )
    or "sr" in name.lower()
    or name.startswith("ct_chest")
]


@pytest.mark.parametrize("name", CUT[:12])
def test_every_cut_of_a_file_is_refused_where_pydicoms_walk_refuses_it(name):
    raw, syntax = DATASETS[name]
    step = max(1, len(raw) // 1500)
    for cut in [*range(0, len(raw), step), *range(max(0, len(raw) - 64), len(raw))]:
        part = raw[:cut]
        assert _outcome(parse_dataset, part, syntax) == _outcome(_with_pydicom, part, syntax), cut


@st.composite
def mutated(draw) -> tuple[bytes, UID]:
    """A shared dataset with bytes overwritten, cut or spliced where hypothesis chooses."""
    raw, syntax = DATASETS[draw(st.sampled_from(CUT))]
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        kind = draw(st.sampled_from(["overwrite", "cut", "splice"]))
        chunk = draw(st.binary(min_size=1, max_size=8))
        if kind == "overwrite":
            data[at : at + len(chunk)] = chunk
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = chunk
    return bytes(data), syntax


@FUZZ
@given(mutated())
def test_what_pydicoms_walk_accepts_is_read_alike(case):
    """Mutated input: whatever pydicom's walk accepts, this one accepts with the same values.
    (It may refuse less: garbage inside a well-formed sequence item, which pydicom parses and
    this walk skips, as pydicom itself skips a sequence of defined length.)"""
    raw, syntax = case
    expected = _outcome(_with_pydicom, raw, syntax)
    if expected != "refused":
        assert _outcome(parse_dataset, raw, syntax) == expected
