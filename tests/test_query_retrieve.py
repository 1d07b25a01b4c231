"""C-FIND, C-GET and C-MOVE driven by DCMTK, with Orthanc as the move destination."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydicom import dcmread
from sqlalchemy import select

from dicom_node.index.schema import instances

from .conftest import CT_SERIES, dcmsend, dcmtk
from .orthanc import OrthancPeer

STUDY_UID = "1.2.826.0.1.3680043.10.474.419639.152757649181548418723364589755"
SERIES_UID = "1.2.826.0.1.3680043.10.474.419639.300423266679936330916265249312"


@pytest.fixture
def ct_node(make_node, copy_files, tmp_path):
    orthanc = OrthancPeer(tmp_path / "orthanc")
    node = make_node(peers={"orthanc": orthanc.peer})
    node.orthanc = orthanc
    node.start()
    folder = copy_files(CT_SERIES, [f"1-{n:03d}.dcm" for n in range(1, 21)])
    result = dcmsend(node.port, folder)
    assert result.returncode == 0, result.stderr
    return node


def find(node, *keys: str, model: str = "-S") -> tuple[list[dict], str]:
    result = dcmtk(
        "findscu",
        "-v",
        model,
        "-aec",
        "AI_NODE",
        "127.0.0.1",
        str(node.port),
        *[arg for key in keys for arg in ("-k", key)],
    )
    answers, current = [], None
    output = result.stdout + result.stderr
    for line in output.splitlines():
        if "Find Response:" in line:
            current = {}
            answers.append(current)
        elif current is not None and line.startswith("I: (") and "[" in line:
            keyword = line.split("#")[-1].split()[-1]
            current[keyword] = line.split("[", 1)[1].split("]", 1)[0].strip()
    return answers, output


def move_study(node, destination: str, *options: str) -> subprocess.CompletedProcess:
    """C-MOVE the CT study from the node to `destination` with DCMTK's movescu."""
    return dcmtk(
        "movescu",
        *options,
        "-S",
        "-aec",
        "AI_NODE",
        "-aem",
        destination,
        "127.0.0.1",
        str(node.port),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={STUDY_UID}",
    )


def test_find_at_every_level_with_counts(ct_node):
    studies, _ = find(
        ct_node,
        "QueryRetrieveLevel=STUDY",
        "PatientID=MIDRC*",
        "StudyDate=20040101-20041231",
        "ModalitiesInStudy=CT",
        "NumberOfStudyRelatedInstances",
        "NumberOfStudyRelatedSeries",
        "StudyInstanceUID",
    )
    assert len(studies) == 1
    assert studies[0]["StudyInstanceUID"] == STUDY_UID
    assert studies[0]["NumberOfStudyRelatedInstances"] == "20"
    assert studies[0]["NumberOfStudyRelatedSeries"] == "1"
    patients, _ = find(
        ct_node,
        "QueryRetrieveLevel=PATIENT",
        "PatientName=*ricord*",
        "NumberOfPatientRelatedInstances",
        model="-P",
    )
    assert patients and patients[0]["NumberOfPatientRelatedInstances"] == "20"
    series, _ = find(
        ct_node,
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={STUDY_UID}",
        "SeriesInstanceUID",
        "Modality=CT",
        "NumberOfSeriesRelatedInstances",
    )
    assert series[0]["SeriesInstanceUID"] == SERIES_UID
    assert series[0]["NumberOfSeriesRelatedInstances"] == "20"
    images, _ = find(
        ct_node,
        "QueryRetrieveLevel=IMAGE",
        f"SeriesInstanceUID={SERIES_UID}",
        "SOPInstanceUID",
        "InstanceNumber",
    )
    assert len(images) == 20
    nothing, _ = find(ct_node, "QueryRetrieveLevel=STUDY", "StudyDate=-20001231")
    assert nothing == []


def test_find_bad_level_and_unsupported_key(ct_node):
    answers, log = find(ct_node, "QueryRetrieveLevel=PATIENT", "PatientID")  # Study Root
    assert answers == [] and "DataSetDoesNotMatchSOPClass" in log
    answers, _ = find(ct_node, "QueryRetrieveLevel=STUDY", "PatientWeight=70")
    assert answers == []
    assert "C-FIND refused (0xC000): matching on PatientWeight" in ct_node.log()


UNCOMPRESSED_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}


def test_get_returns_the_stored_instances(ct_node, tmp_path):
    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk(
        "getscu",
        "-S",
        "-aec",
        "AI_NODE",
        "127.0.0.1",
        str(ct_node.port),
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"SeriesInstanceUID={SERIES_UID}",
        "-od",
        str(out),
    )
    assert len(list(out.iterdir())) == 20, result.stderr[-2000:]
    # getscu takes only uncompressed syntaxes by default: the JPEG Lossless CT was decompressed
    # for the transfer, and must still be the same instances.
    received = [dcmread(path) for path in out.iterdir()]
    assert {str(d.file_meta.TransferSyntaxUID) for d in received} <= UNCOMPRESSED_SYNTAXES
    with ct_node.engine().connect() as connection:
        stored = set(connection.execute(select(instances.c.sop_instance_uid)).scalars())
    assert {str(d.SOPInstanceUID) for d in received} == stored


def test_three_moves_to_one_destination_at_once_each_send_every_instance(ct_node):
    """Each C-MOVE sends over the association pynetdicom opened for it (the node finds it by
    the destination's AE title and tunes it): three at once must neither share one nor stall."""
    orthanc = ct_node.orthanc
    orthanc.start()
    try:
        with ThreadPoolExecutor(3) as pool:
            moves = [pool.submit(move_study, ct_node, "ORTHANC", "-v") for _ in range(3)]
            results = [move.result() for move in moves]
        for result in results:
            assert result.returncode == 0, result.stderr[-2000:]
            assert "Final Move Response (Success)" in result.stdout + result.stderr
        assert orthanc.get("/statistics")["CountInstances"] == 20
    finally:
        orthanc.stop()
    assert "Traceback" not in ct_node.log()


def test_move_to_orthanc_and_unknown_destination(ct_node, tmp_path):
    orthanc = ct_node.orthanc
    orthanc.start()
    try:
        result = move_study(ct_node, "ORTHANC")
        assert result.returncode == 0, result.stderr[-2000:]
        assert orthanc.get("/statistics")["CountInstances"] == 20
        studies = orthanc.get("/studies?expand")
        assert studies[0]["MainDicomTags"]["StudyInstanceUID"] == STUDY_UID
    finally:
        orthanc.stop()
    result = move_study(ct_node, "NOBODY")
    assert "MoveDestinationUnknown" in result.stdout + result.stderr
    assert "unknown destination AE 'NOBODY'" in ct_node.log()
