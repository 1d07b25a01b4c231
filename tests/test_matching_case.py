"""Wrong-patient attacks on matching (PS3.4 C.2.2.2.4): two patients whose IDs differ only in
case, and names that differ only in (non-ASCII) case. IDs must match case-sensitively in
C-FIND, C-MOVE and QIDO-RS, person names case-insensitively, on SQLite as on PostgreSQL."""

from __future__ import annotations

import urllib.parse

import pytest
import requests
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
)

from .conftest import TRANSFER_SYNTAXES, dcmsend, free_port

#: PatientID -> PatientName: the same letters, upper and lower case (Ü and ü beyond ASCII)
PATIENTS = {"abc123": "Müller^Hans", "ABC123": "MÜLLER^ANNA"}


@pytest.fixture
def catcher():
    """A storage SCP that records the SOP Instance UIDs a C-MOVE delivers to it."""
    received: list[str] = []
    ae = AE("CATCHER")
    ae.add_supported_context(CTImageStorage)

    def keep(event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, keep)]
    )
    yield port, received
    server.shutdown()


@pytest.fixture
def two_patients(make_node, catcher, tmp_path):
    """A node holding one study of each patient; returns the node, PatientID -> (study UID,
    SOP Instance UID), and what the catcher received."""
    port, received = catcher
    node = make_node(peers={"catcher": {"ae_title": "CATCHER", "host": "127.0.0.1", "port": port}})
    node.start()
    folder = tmp_path / "patients"
    folder.mkdir()
    stored = {}
    for patient_id, name in PATIENTS.items():
        dataset = dcmread(TRANSFER_SYNTAXES / "CT_small.dcm")
        dataset.SpecificCharacterSet = "ISO_IR 192"
        dataset.PatientID, dataset.PatientName = patient_id, name
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.save_as(folder / f"{patient_id}.dcm", enforce_file_format=True)
        stored[patient_id] = (dataset.StudyInstanceUID, dataset.SOPInstanceUID)
    assert dcmsend(node.port, folder).returncode == 0
    return node, stored, received


def c_find(node, **keys: str) -> set[str]:
    """Study Instance UIDs a Study Root C-FIND at STUDY level answers for `keys`."""
    ae = AE("FINDER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    identifier = Dataset()
    identifier.SpecificCharacterSet = "ISO_IR 192"
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    association = ae.associate("127.0.0.1", node.port, ae_title="AI_NODE")
    assert association.is_established
    found = set()
    for status, answer in association.send_c_find(
        identifier, StudyRootQueryRetrieveInformationModelFind
    ):
        assert status.Status in (0x0000, 0xFF00), f"C-FIND failed: 0x{status.Status:04X}"
        if answer is not None:
            found.add(str(answer.StudyInstanceUID))
    association.release()
    return found


def c_move_patient(node, patient_id: str) -> int:
    """C-MOVE (Patient Root, PATIENT level) of `patient_id` to the catcher; the final status."""
    ae = AE("MOVER")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelMove)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "PATIENT"
    identifier.PatientID = patient_id
    association = ae.associate("127.0.0.1", node.port, ae_title="AI_NODE")
    assert association.is_established
    statuses = [
        status.Status
        for status, _ in association.send_c_move(
            identifier, "CATCHER", PatientRootQueryRetrieveInformationModelMove
        )
    ]
    association.release()
    return statuses[-1]


def qido(node, **keys: str) -> set[str]:
    url = f"http://127.0.0.1:{node.http_port}/dicomweb/studies?" + urllib.parse.urlencode(keys)
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200, answer.text
    return {study["0020000D"]["Value"][0] for study in answer.json()}


def test_patient_ids_match_case_sensitively_in_find_move_and_qido(two_patients):
    node, stored, received = two_patients
    lower, upper = stored["abc123"], stored["ABC123"]
    assert c_find(node, PatientID="abc12?") == {lower[0]}
    assert c_find(node, PatientID="ABC*") == {upper[0]}
    assert c_find(node, PatientID="abc123") == {lower[0]}
    assert c_find(node, PatientID="Abc*") == set()
    assert qido(node, PatientID="abc12?") == {lower[0]}
    assert qido(node, PatientID="ABC123") == {upper[0]}
    # The retrieve delivers the one patient asked for, not the other.
    assert c_move_patient(node, "abc12?") == 0x0000
    assert received == [lower[1]]
    # Other text keys are exact too, and valid queries still find both.
    assert c_find(node, StudyID="1ct?") == set() and qido(node, ModalitiesInStudy="ct") == set()
    assert c_find(node, PatientID="*") == {lower[0], upper[0]}


def test_person_names_match_case_insensitively_beyond_ascii(two_patients):
    node, stored, _ = two_patients
    both = {stored["abc123"][0], stored["ABC123"][0]}
    assert c_find(node, PatientName="müller*") == both
    assert qido(node, PatientName="müller*") == both
    assert qido(node, PatientName="MÜLLER^hans") == {stored["abc123"][0]}
    assert c_find(node, PatientName="mÜller^ANNA") == {stored["ABC123"][0]}
    assert qido(node, PatientName="muller*") == set(), "ü is not u"
