"""The node's DICOMweb answers compared with Orthanc's DICOMweb plugin on the same files."""

from __future__ import annotations

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from .conftest import TRANSFER_SYNTAXES, dcmsend
from .orthanc import OrthancPeer
from .test_dicomweb import CT_SERIES_UID, CT_STUDY, FILES, after_meta, load_files

STUDY_KEYS = {
    "00100020": "PatientID",
    "00100010": "PatientName",
    "00080020": "StudyDate",
    "00080030": "StudyTime",
    "00080050": "AccessionNumber",
    "00200010": "StudyID",
    "0020000D": "StudyInstanceUID",
    "00201206": "NumberOfStudyRelatedSeries",
    "00201208": "NumberOfStudyRelatedInstances",
}
SERIES_KEYS = {
    "0020000E": "SeriesInstanceUID",
    "00080060": "Modality",
    "00200011": "SeriesNumber",
    "00201209": "NumberOfSeriesRelatedInstances",
}
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
INSTANCE_KEYS = {
    "00080018": "SOPInstanceUID",
    "00080016": "SOPClassUID",
    "00200013": "InstanceNumber",
}


def normal(answer: dict, tags) -> dict:
    """The compared attributes of one answer, as text (IS may come as number or string)."""
    picked = {}
    for tag in tags:
        found = answer.get(tag, {}).get("Value", [])
        picked[tag] = [
            item["Alphabetic"] if isinstance(item, dict) else str(item).strip() for item in found
        ]
    return picked


def by_uid(answers: list[dict], uid_tag: str, tags) -> dict:
    return {answer[uid_tag]["Value"][0]: normal(answer, tags) for answer in answers}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """This node and Orthanc with its DICOMweb plugin, each sent the same files by dcmsend."""
    from .conftest import configured_node

    root = tmp_path_factory.mktemp("parity")
    orthanc = OrthancPeer(root / "orthanc", dicomweb=True)
    orthanc.start()
    node = configured_node(root / "node", f"sqlite:///{root / 'index.sqlite'}")
    node.start()
    try:
        files = load_files(root / "files")
        for port in (node.port, orthanc.dicom_port):
            result = dcmsend(port, files)
            assert result.returncode == 0, result.stderr
        yield (
            DICOMwebClient(f"http://127.0.0.1:{node.http_port}/dicomweb"),
            DICOMwebClient(orthanc.dicomweb_url),
        )
    finally:
        node.stop()
        orthanc.stop()


def test_qido_answers_match_orthanc(both):
    ours, theirs = both
    assert by_uid(ours.search_for_studies(), "0020000D", STUDY_KEYS) == by_uid(
        theirs.search_for_studies(), "0020000D", STUDY_KEYS
    )
    assert by_uid(ours.search_for_series(CT_STUDY), "0020000E", SERIES_KEYS) == by_uid(
        theirs.search_for_series(CT_STUDY), "0020000E", SERIES_KEYS
    )
    assert by_uid(
        ours.search_for_instances(CT_STUDY, CT_SERIES_UID), "00080018", INSTANCE_KEYS
    ) == by_uid(theirs.search_for_instances(CT_STUDY, CT_SERIES_UID), "00080018", INSTANCE_KEYS)
    # Orthanc 1.10's plugin answers no wildcard or person-name match (tested in test_dicomweb).
    for filters in (
        {"PatientID": "4MR1"},
        {"StudyInstanceUID": CT_STUDY},
        {"StudyDate": "20040101-20041231"},
        {"StudyDate": "-20000101"},
        {"ModalitiesInStudy": "CT"},
        {"AccessionNumber": "nothing"},
    ):
        assert set(by_uid(ours.search_for_studies(search_filters=filters), "0020000D", [])) == set(
            by_uid(theirs.search_for_studies(search_filters=filters), "0020000D", [])
        ), filters
    for filters in ({"Modality": "MR"}, {"SeriesInstanceUID": CT_SERIES_UID}):
        assert by_uid(
            ours.search_for_series(search_filters=filters), "0020000E", SERIES_KEYS
        ) == by_uid(theirs.search_for_series(search_filters=filters), "0020000E", SERIES_KEYS)


def test_retrieved_datasets_match_orthanc(both):
    ours, theirs = both
    different = []
    for name in FILES:
        sent = dcmread(TRANSFER_SYNTAXES / name, stop_before_pixels=True)
        uids = (sent.StudyInstanceUID, sent.SeriesInstanceUID, sent.SOPInstanceUID)
        answers = []
        for client in (ours, theirs):
            url = f"{client.base_url}/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}"
            answer = requests.get(url, headers={"Accept": AS_STORED}, timeout=30)
            assert answer.status_code == 200, (name, client.base_url)
            boundary = answer.headers["content-type"].split("boundary=")[1].strip('"').encode()
            part = answer.content.split(b"--" + boundary)[1].split(b"\r\n\r\n", 1)[1]
            answers.append(after_meta(part[: -len(b"\r\n")]))
        if answers[0] != answers[1]:
            different.append(name)
    assert different == [], different
