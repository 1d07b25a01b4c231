"""De-identification: the Basic Profile on real files and on every attribute of Table E.1-1."""

from __future__ import annotations

import copy
import stat
import subprocess
import sys

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.sr.codedict import codes
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from dicom_node.deid.basic_profile import EXACT, Action, action_for
from dicom_node.deid.deidentify import Deidentifier
from dicom_node.deid.pseudonyms import Pseudonymizer, load_or_create_key
from dicom_node.deid.reidentify import NotOurPseudonym, reidentify
from dicom_node.index.database import open_engine
from dicom_node.index.pseudonyms import PseudonymTable

from .conftest import CT_SERIES, SHARED_DATA, TRANSFER_SYNTAXES, dciodvfy_errors

KEY = b"k" * 32
SR_SEG = SHARED_DATA / "dicom_sr_seg_examples"
NIH_DX = next((SHARED_DATA / "cxr_dicom").glob("nih_*.dcm"))
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "OperatorsName",
    "PerformingPhysicianName",
    "StudyID",
    "StudyDate",
    "StudyTime",
)


def deidentify(dataset: Dataset, key: bytes = KEY) -> Dataset:
    return Deidentifier(Pseudonymizer(key))(dataset)


def all_values(dataset: Dataset) -> list[str]:
    values: list[str] = []
    dataset.walk(lambda _, element: values.append(str(element.value)))
    return values


@pytest.mark.parametrize(
    "path",
    [
        CT_SERIES / "1-001.dcm",
        NIH_DX,
        TRANSFER_SYNTAXES / "CT_small.dcm",
        SR_SEG / "pydicom_test-SR.dcm",
    ],
    ids=lambda p: p.name[:24],
)
def test_no_identifying_value_survives(path):
    original = pydicom.dcmread(path)
    result = deidentify(original)
    secrets = [str(original.get(k)) for k in IDENTIFYING if original.get(k) not in (None, "")]
    assert secrets, "the file should carry some identity to remove"
    remaining = all_values(result)
    for secret in secrets:
        assert not any(secret in value for value in remaining), secret
    assert not [e for e in result.iterall() if e.tag.is_private]
    assert result.PatientIdentityRemoved == "YES"
    assert result.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert result.SOPClassUID == original.SOPClassUID
    assert (
        result.SOPInstanceUID.startswith("2.25.")
        and result.SOPInstanceUID != original.SOPInstanceUID
    )
    assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID
    if "PixelData" in original:
        assert result.PixelData == original.PixelData
    assert original.PatientName == pydicom.dcmread(path).PatientName, "the original is untouched"


def test_pseudonyms_keep_a_series_together_and_depend_on_the_key():
    first, second = (pydicom.dcmread(CT_SERIES / name) for name in ("1-001.dcm", "1-002.dcm"))
    a, b = deidentify(first), deidentify(second)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientID"):
        assert a.get(keyword) == b.get(keyword) != first.get(keyword), keyword
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert deidentify(first).SOPInstanceUID == a.SOPInstanceUID, "deterministic"
    assert deidentify(first, b"other key, other pseudonyms!").SOPInstanceUID != a.SOPInstanceUID
    assert len(a.StudyInstanceUID) <= 64


def _sample(vr: str):
    vr = vr.split(" or ")[0]
    samples = {
        "DA": "20200102",
        "TM": "101010",
        "DT": "20200102101010",
        "PN": "Doe^Jane",
        "AS": "042Y",
        "IS": "42",
        "DS": "4.2",
        "UI": "1.2.3.4.5",
        "AT": 0x00100010,
        "UR": "http://secret.example",
        "CS": "SECRET",
    }
    if vr in samples:
        return samples[vr]
    if vr in {"US", "SS", "UL", "SL", "UV", "SV"}:
        return 42
    if vr in {"FL", "FD"}:
        return 4.2
    if vr in {"OB", "OW", "OD", "OF", "OL", "OV", "UN"}:
        return b"\x01\x02"
    return "SECRET"


def _table_dataset() -> Dataset:
    """Every exact tag of the profile that pydicom's dictionary knows, with a telling value."""
    dataset = Dataset()
    for tag in EXACT:
        if Tag(tag).group in (0x0002, 0xFFFA, 0xFFFC) or not keyword_for_tag(tag):
            continue
        vr = dictionary_VR(tag)
        value = [Dataset()] if vr == "SQ" else _sample(vr)
        dataset.add_new(tag, vr.split(" or ")[0], value)
    return dataset


def _check_actions(before: Dataset, after: Dataset) -> None:
    for element in before:
        action = action_for(int(element.tag))
        if action is Action.REMOVE:
            assert element.tag not in after, element.keyword
            continue
        kept = after[element.tag]
        if element.VR == "SQ":
            continue
        if action is Action.EMPTY and element.keyword not in ("PatientName", "PatientID"):
            assert kept.value in (None, "", b"", []), element.keyword
        elif action is Action.UID:
            assert str(kept.value).startswith("2.25."), element.keyword
        else:
            assert kept.value != element.value, element.keyword


def test_every_attribute_of_the_table_gets_its_action_at_any_depth():
    top = _table_dataset()
    assert len(top) > 500
    _check_actions(top, deidentify(top))
    # The same attributes three sequences deep (sequences the profile keeps).
    kept = [t for t in (0x00081115, 0x00081140, 0x00089121) if action_for(t) is not Action.REMOVE]
    assert len(kept) == 3
    nested = _table_dataset()
    for tag in kept:
        wrapper = Dataset()
        wrapper.add_new(tag, "SQ", [nested])
        nested = wrapper
    inner = deidentify(nested)
    for tag in reversed(kept):
        inner = inner[tag].value[0]
    _check_actions(_table_dataset(), inner)


def test_cli_writes_valid_objects_and_keeps_its_key(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    pydicom_files = [TRANSFER_SYNTAXES / n for n in ("CT_small.dcm", "MR_small.dcm", "JPEG-LL.dcm")]
    for path in (CT_SERIES / "1-001.dcm", NIH_DX, *sorted(SR_SEG.glob("*.dcm")), *pydicom_files):
        (source / path.name).write_bytes(path.read_bytes())
    (source / "notes.txt").write_text("not DICOM")
    config = tmp_path / "node.yaml"
    config.write_text(f"storage:\n  path: {tmp_path / 'storage'}\n")
    command = [sys.executable, "-m", "dicom_node", "anonymize", "--config", str(config)]
    result = subprocess.run(
        [*command, str(source), str(tmp_path / "out")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "de-identified 9 file(s)" in result.stdout and "1 skipped" in result.stdout
    assert "notes.txt: not a readable DICOM file" in result.stderr
    key_file = tmp_path / "storage" / "deid.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_or_create_key(key_file) == key_file.read_bytes()
    for path in sorted(source.glob("*.dcm")):
        out = tmp_path / "out" / path.name
        # Nothing the profile did makes the object less valid than it was.
        assert dciodvfy_errors(out) <= dciodvfy_errors(path), path.name
    mapped = PseudonymTable(open_engine(f"sqlite:///{tmp_path / 'storage' / 'index.sqlite'}"))
    out_uid = pydicom.dcmread(tmp_path / "out" / NIH_DX.name).SOPInstanceUID
    assert mapped.originals([out_uid]) == {out_uid: pydicom.dcmread(NIH_DX).SOPInstanceUID}
    again = subprocess.run(
        [*command, str(NIH_DX), str(tmp_path / "again.dcm")], capture_output=True, text=True
    )
    assert again.returncode == 0
    first = pydicom.dcmread(tmp_path / "out" / NIH_DX.name)
    assert pydicom.dcmread(tmp_path / "again.dcm").SOPInstanceUID == first.SOPInstanceUID


def test_results_map_back_to_the_original_study(tmp_path):
    store = PseudonymTable(open_engine(f"sqlite:///{tmp_path / 'index.sqlite'}"))
    pseudonyms = Pseudonymizer(KEY)
    originals = [pydicom.dcmread(CT_SERIES / name) for name in ("1-001.dcm", "1-002.dcm")]
    copies = [Deidentifier(pseudonyms)(ds) for ds in originals]
    store.save(pseudonyms.take_issued())
    assert pseudonyms.issued == {}

    # What a model's result object looks like: made from the de-identified copies, with its own
    # new series and instance UIDs, referencing the copies' UIDs.
    result = Dataset()
    result.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    result.SOPInstanceUID = generate_uid()
    result.SeriesInstanceUID = generate_uid()
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName"):
        setattr(result, keyword, copies[0].data_element(keyword).value)
    result.PatientIdentityRemoved = "YES"
    referenced = Dataset()
    referenced.SeriesInstanceUID = copies[0].SeriesInstanceUID
    referenced.ReferencedInstanceSequence = []
    for copy_ in copies:
        item = Dataset()
        item.ReferencedSOPClassUID = copy_.SOPClassUID
        item.ReferencedSOPInstanceUID = copy_.SOPInstanceUID
        referenced.ReferencedInstanceSequence.append(item)
    result.ReferencedSeriesSequence = [referenced]

    back = reidentify(result, store, originals[0])
    assert back.StudyInstanceUID == originals[0].StudyInstanceUID
    assert back.FrameOfReferenceUID == originals[0].FrameOfReferenceUID
    series = back.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == originals[0].SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence] == [
        ds.SOPInstanceUID for ds in originals
    ]
    assert back.SOPInstanceUID == result.SOPInstanceUID, "the result's own UIDs stay"
    assert back.PatientID == originals[0].PatientID and back.PatientName == originals[0].PatientName
    assert back.StudyDate == originals[0].StudyDate
    assert "PatientIdentityRemoved" not in back

    stranger = copy.deepcopy(result)
    stranger.StudyInstanceUID = generate_uid()
    with pytest.raises(NotOurPseudonym):
        reidentify(stranger, store, originals[0])


def test_a_segmentation_made_on_the_copy_files_into_the_original_study(tmp_path):
    """De-identify, segment the copy with highdicom, re-identify: the SEG references the
    original series, instances and frame of reference, and validates."""
    store = PseudonymTable(open_engine(f"sqlite:///{tmp_path / 'index.sqlite'}"))
    pseudonyms = Pseudonymizer(KEY)
    originals = [pydicom.dcmread(CT_SERIES / f"1-00{n}.dcm") for n in (1, 2, 3)]
    copies = [Deidentifier(pseudonyms)(ds) for ds in originals]
    store.save(pseudonyms.take_issued())
    bone = np.stack([ds.pixel_array * ds.RescaleSlope + ds.RescaleIntercept > 300 for ds in copies])
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Bone",
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Bone,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="test threshold", version="1", family=codes.cid7162.ArtificialIntelligence
        ),
    )
    seg = hd.seg.Segmentation(
        source_images=copies,
        pixel_array=bone,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="dicom-ai-node tests",
        manufacturer_model_name="threshold",
        software_versions="0",
        device_serial_number="0",
    )
    back = reidentify(seg, store, originals[0])
    assert back.StudyInstanceUID == originals[0].StudyInstanceUID
    assert back.FrameOfReferenceUID == originals[0].FrameOfReferenceUID
    assert back.PatientID == originals[0].PatientID
    (series,) = back.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == originals[0].SeriesInstanceUID
    referenced = {i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence}
    assert referenced == {ds.SOPInstanceUID for ds in originals}
    sources = {
        source.ReferencedSOPInstanceUID
        for frame in back.PerFrameFunctionalGroupsSequence
        for derivation in frame.DerivationImageSequence
        for source in derivation.SourceImageSequence
    }
    assert sources <= {ds.SOPInstanceUID for ds in originals} and sources
    assert (
        back.SOPInstanceUID == seg.SOPInstanceUID
        and back.SeriesInstanceUID == seg.SeriesInstanceUID
    )
    path = tmp_path / "seg.dcm"
    back.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == set()
