"""De-identification options of PS3.15 Table E.1-1, walked as data, and their configuration."""

from __future__ import annotations

import io
from datetime import date

import pydicom
import pytest
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.uid import ExplicitVRLittleEndian

from dicom_node.config import ConfigError, parse_config
from dicom_node.deid.basic_profile import EXACT, Action, action_for
from dicom_node.deid.burned_in import burned_in_text
from dicom_node.deid.cleaning import SCRUBBED
from dicom_node.deid.deidentify import DeidentificationError, Deidentifier
from dicom_node.deid.options import COLUMNS, ROWS, option_actions
from dicom_node.deid.pseudonyms import Pseudonymizer
from dicom_node.deid.settings import DateHandling, DeidentificationOptions

from .conftest import CT_SERIES, dciodvfy_errors
from .test_deid import KEY, SR_SEG, _table_dataset

PSEUDONYMS = Pseudonymizer(KEY)


def deidentify(dataset: Dataset, **options) -> Dataset:
    return Deidentifier(PSEUDONYMS, DeidentificationOptions(**options))(dataset)


def test_option_columns_belong_to_the_table_we_apply():
    assert set(COLUMNS) >= {
        "retain_full_dates",
        "retain_modified_dates",
        "retain_patient_characteristics",
        "retain_device_identity",
        "clean_descriptors",
    }
    for name, column in COLUMNS.items():
        assert column.keys() <= EXACT.keys(), name
        assert set(column.values()) <= {Action.KEEP, Action.CLEAN, Action.REMOVE}, name
    # Every date or time of the table follows the longitudinal options, birth date and time
    # (and GPS time stamps, which locate the device) excepted, as in the table's rows.
    dates = {t for t in EXACT if keyword_for_tag(t) and dictionary_VR(t) in ("DA", "DT", "TM")}
    excepted = {
        keyword_for_tag(t) for t in dates - COLUMNS["retain_full_dates"].keys() if t in ROWS
    }
    assert excepted == {"PatientBirthDate", "PatientBirthTime", "GPSTimeStamp"}
    assert dates - COLUMNS["retain_full_dates"].keys() - ROWS == set()
    assert COLUMNS["retain_full_dates"].keys() == COLUMNS["retain_modified_dates"].keys()


@pytest.mark.parametrize(
    "options, column",
    [
        ({"patient_characteristics": True}, "retain_patient_characteristics"),
        ({"device_identity": True}, "retain_device_identity"),
        ({"institution_identity": True}, "retain_institution_identity"),
        ({"dates": "full"}, "retain_full_dates"),
        ({"dates": "shifted"}, "retain_modified_dates"),
        ({"clean_descriptors": True}, "clean_descriptors"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_each_option_changes_exactly_its_column(options, column):
    """Every attribute of the table, filled with a telling value, under one option."""
    before = _table_dataset()
    before.PatientID = "PAT-4711"
    after = deidentify(before, **options)
    offset = PSEUDONYMS.date_offset("PAT-4711")
    changed = COLUMNS[column]
    assert option_actions(DeidentificationOptions(**options)).keys() == changed.keys()
    checked = 0
    for element in before:
        tag = int(element.tag)
        if tag not in changed or element.keyword in ("PatientID", "PatientName"):
            continue
        checked += 1
        kept = after[element.tag]
        if changed[tag] is Action.KEEP or element.VR in ("SQ", "TM", "CS", "US", "FD"):
            assert kept.value == element.value, element.keyword
        elif element.VR == "DA":
            expected = date(2020, 1, 2).toordinal() - offset
            assert kept.value == date.fromordinal(expected).strftime("%Y%m%d"), element.keyword
        elif element.VR == "DT":
            assert kept.value[8:] == element.value[8:] and kept.value != element.value
        elif element.VR in ("LO", "SH", "ST", "LT", "UT", "UC"):
            # "SECRET" is also the value of attributes the profile removes: an identifier.
            assert kept.value == SCRUBBED, element.keyword
        else:
            assert kept.value in (b"", None, element.value), element.keyword
    assert checked >= len(changed) - 12  # the table rows pydicom's dictionary lacks
    for element in before:  # the rest gets the Basic Profile's action
        if int(element.tag) not in changed and action_for(int(element.tag)) is Action.REMOVE:
            assert element.tag not in after, element.keyword


def test_shifted_dates_keep_intervals_within_a_patient():
    first, second = (pydicom.dcmread(CT_SERIES / name) for name in ("1-001.dcm", "1-002.dcm"))
    second.StudyDate = "20200301"
    first.StudyDate = "20200101"
    a, b = deidentify(first, dates="shifted"), deidentify(second, dates="shifted")
    days = [date(int(v[:4]), int(v[4:6]), int(v[6:])) for v in (a.StudyDate, b.StudyDate)]
    assert (days[1] - days[0]).days == 60 and a.StudyDate != first.StudyDate
    assert a.StudyTime == first.StudyTime, "times of day stay"
    assert a.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "PatientBirthDate" not in a or not a.PatientBirthDate
    other = pydicom.dcmread(CT_SERIES / "1-001.dcm")
    other.PatientID, other.StudyDate = "SOMEONE-ELSE", "20200101"
    assert deidentify(other, dates="shifted").StudyDate != a.StudyDate
    assert deidentify(first, dates="full").StudyDate == "20200101"
    assert deidentify(first).LongitudinalTemporalInformationModified == "REMOVED"


def test_clean_descriptors_keep_descriptions_without_the_patients_identifiers():
    original = pydicom.dcmread(CT_SERIES / "1-001.dcm")
    original.PatientName = "Doe^Jane"
    original.PatientID = "MRN12345"
    original.PatientBirthDate = "19700215"
    original.StudyDescription = "CT chest for jane DOE (MRN12345), born 15.02.1970"
    original.SeriesDescription = "Lung 1.25mm"
    plain = deidentify(original)
    assert "StudyDescription" not in plain and "SeriesDescription" not in plain
    cleaned = deidentify(original, clean_descriptors=True)
    assert cleaned.SeriesDescription == "Lung 1.25mm"
    assert (
        cleaned.StudyDescription
        == f"CT chest for {SCRUBBED} {SCRUBBED} ({SCRUBBED}), born {SCRUBBED}"
    )
    codes = [item.CodeValue for item in cleaned.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113105"]
    assert "Clean Descriptors Option" in cleaned.DeidentificationMethod


def test_patient_characteristics_and_device_identity():
    original = pydicom.dcmread(CT_SERIES / "1-001.dcm")
    original.PatientAge, original.PatientSex, original.PatientWeight = "061Y", "F", 70
    original.DeviceSerialNumber, original.StationName = "SN-998877", "CT-ROOM-3"
    plain = deidentify(original)
    assert "PatientAge" not in plain and not plain.get("PatientSex")
    assert plain.get("StationName") in (None, "", "ANONYMIZED")
    kept = deidentify(original, patient_characteristics=True, device_identity=True)
    assert (kept.PatientAge, kept.PatientSex, kept.PatientWeight) == ("061Y", "F", 70)
    assert (kept.DeviceSerialNumber, kept.StationName) == ("SN-998877", "CT-ROOM-3")
    assert [i.CodeValue for i in kept.DeidentificationMethodCodeSequence] == [
        "113100",
        "113109",
        "113108",
    ]


def test_safe_private_keeps_only_the_listed_attributes_and_their_creator():
    original = Dataset()
    original.PatientID = "P1"
    original.SOPInstanceUID = "1.2.3"
    block = original.private_block(0x0019, "GEMS_ACQU_01", create=True)
    block.add_new(0x1E, "DS", "12.5")
    block.add_new(0x1F, "LO", "Jane Doe")
    other = original.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    other.add_new(0x10, "OB", b"secret")
    plain = deidentify(original)
    assert not [e for e in plain if e.tag.is_private]
    kept = deidentify(original, safe_private=["0019,GEMS_ACQU_01,1E"])
    private = {e.tag: e.value for e in kept if e.tag.is_private}
    assert private == {0x00190010: "GEMS_ACQU_01", 0x0019101E: "12.5"}
    assert "113111" in [i.CodeValue for i in kept.DeidentificationMethodCodeSequence]


def test_route_options_are_validated_with_the_key_named():
    config = parse_config(
        {
            "peers": {"research": {"ae_title": "RESEARCH", "host": "127.0.0.1", "port": 4242}},
            "inference": {
                "routes": [
                    {
                        "name": "ct-research",
                        "modality": ["CT"],
                        "research_destinations": ["research"],
                        "deidentification": {"dates": "shifted", "safe_private": ["0019,GE,1E"]},
                    }
                ]
            },
        }
    )
    route = config.inference.routes[0]
    assert route.deidentification.dates is DateHandling.SHIFTED and route.models == []
    with pytest.raises(ConfigError, match="safe_private.*GGGG,Private Creator,EE"):
        parse_config(
            {
                "inference": {
                    "routes": [
                        {
                            "name": "x",
                            "models": ["m"],
                            "deidentification": {"safe_private": ["0010,X,10"]},
                        }
                    ]
                }
            }
        )
    with pytest.raises(ConfigError, match="dates"):
        parse_config(
            {
                "inference": {
                    "routes": [
                        {"name": "x", "models": ["m"], "deidentification": {"dates": "jittered"}}
                    ]
                }
            }
        )
    with pytest.raises(ConfigError, match="neither models nor research_destinations"):
        parse_config({"inference": {"routes": [{"name": "x"}]}})
    with pytest.raises(ConfigError, match="unknown peers: nowhere"):
        parse_config(
            {"inference": {"routes": [{"name": "x", "research_destinations": ["nowhere"]}]}}
        )


@pytest.mark.parametrize("name", ["1-001.dcm", "SR"])
def test_every_option_together_makes_no_new_dciodvfy_error(tmp_path, name):
    source = CT_SERIES / name if name != "SR" else SR_SEG / "pydicom_test-SR.dcm"
    options = {
        "dates": "shifted",
        "patient_characteristics": True,
        "device_identity": True,
        "institution_identity": True,
        "clean_descriptors": True,
    }
    out = tmp_path / "out.dcm"
    deidentify(pydicom.dcmread(source), **options).save_as(out, enforce_file_format=True)
    assert dciodvfy_errors(out) <= dciodvfy_errors(source)


def _with_broken_sequence(path) -> bytes:
    """The file with a Value Representation inside a sequence item that does not exist."""
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3"
    dataset.ReferencedImageSequence = [item]
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    raw = buffer.getvalue()
    at = raw.find(b"\x08\x00\x50\x11UI", raw.find(b"\x08\x00\x40\x11SQ"))
    return raw[: at + 4] + b"ZZ" + raw[at + 6 :]


def _with_undecodable_text(path) -> bytes:
    dataset = pydicom.dcmread(path)
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.StudyDescription = "PLACEHOLDER"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue().replace(b"PLACEHOLDER", b"Chest\xff\xfe\xfa\xfbCT")


@pytest.mark.parametrize("corrupt", [_with_broken_sequence, _with_undecodable_text])
def test_malformed_input_is_refused_and_left_untouched(tmp_path, corrupt):
    stored = tmp_path / "stored.dcm"
    stored.write_bytes(corrupt(CT_SERIES / "1-001.dcm"))
    before = stored.read_bytes()
    with pytest.raises(DeidentificationError, match="cannot be de-identified safely"):
        deidentify(pydicom.dcmread(stored), clean_descriptors=True)
    assert stored.read_bytes() == before


@pytest.mark.parametrize(
    "attributes, reason",
    [
        ({"Modality": "CT", "BurnedInAnnotation": "YES"}, "Burned In Annotation is YES"),
        ({"Modality": "DX", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, "secondary capture"),
        ({"Modality": "US", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.6.1"}, "ultrasound"),
        ({"Modality": "CT", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}, None),
        ({"Modality": "CR", "BurnedInAnnotation": "NO"}, None),
    ],
)
def test_burned_in_text_is_recognised(attributes, reason):
    header = Dataset()
    for keyword, value in attributes.items():
        setattr(header, keyword, value)
    found = burned_in_text(header)
    assert (found is None) if reason is None else (reason in found)
