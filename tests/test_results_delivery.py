"""AI results end to end: studies sent by DCMTK are routed, the models run on de-identified data,
their SEG and SR come back re-identified into the patient's study, are kept and indexed by the
node, and reach Orthanc (the PACS) through the outbox, also when Orthanc was down and the node
was killed meanwhile. Running a job again makes no second copy of anything."""

from __future__ import annotations

import io
import signal
import subprocess
from pathlib import Path

import pydicom
import pytest
import requests
from lxml import etree
from sqlalchemy import func, select

from dicom_node.index.schema import (
    JOB_DONE,
    OUTBOX_PENDING,
    OUTBOX_SENT,
    instances,
)

from .conftest import CR_CHEST, CT_SERIES, dciodvfy_errors, dcmsend, dcmtk
from .orthanc import OrthancPeer
from .test_audit import audit_messages, of_event
from .test_durability import wait_until
from .test_research_forwarding import cli, job_rows, outbox_rows

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def job_states(node) -> list[str]:
    return [state for _, state in job_rows(node)]


def outbox_states(node) -> list[str]:
    return [state for state, _, _ in outbox_rows(node)]


def node_status(node) -> dict:
    return requests.get(f"http://127.0.0.1:{node.http_port}/status", timeout=10).json()


def count(node, table) -> int:
    with node.engine().connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


def stored_results(node, study_uid: str) -> dict[str, pydicom.Dataset]:
    """The node's own copies of its results in the study, by modality and series number."""
    with node.engine().connect() as connection:
        paths = connection.execute(
            select(instances.c.path).where(instances.c.calling_ae_title == "AI_NODE")
        ).scalars()
        found = [pydicom.dcmread(node.storage / path) for path in paths]
    return {f"{d.Modality} {d.SeriesNumber}": d for d in found if d.StudyInstanceUID == study_uid}


def storescu_ct(port: int, called_ae: str, folder: Path = CT_SERIES) -> subprocess.CompletedProcess:
    """The shared chest CT (or the slices of it in ``folder``) by storescu, proposing its own
    transfer syntax (JPEG lossless)."""
    return dcmtk(
        "storescu",
        *("-aet", "MODALITY", "-aec", called_ae, "-xs", "+sd", "+sp", "*.dcm"),
        *("127.0.0.1", str(port), str(folder)),
        timeout=300,
    )


@pytest.fixture
def orthanc(tmp_path):
    peer = OrthancPeer(tmp_path / "orthanc")
    yield peer
    peer.stop()


def test_results_reach_the_pacs_in_the_patients_study(make_node, orthanc, copy_files):
    node = make_node(
        peers={"pacs": orthanc.peer},
        results={"destinations": ["pacs"]},
        study={"stable_seconds": 1, "check_interval_seconds": 0.2},
        outbox={"first_retry_seconds": 0.3, "max_retry_seconds": 1},
    )
    node.start()
    orthanc.start()

    # The shared chest CT, through the default routes.
    ct_uid = str(
        pydicom.dcmread(next(CT_SERIES.glob("*.dcm")), stop_before_pixels=True)[
            "StudyInstanceUID"
        ].value
    )
    # The PACS holds the CT; a copy of it comes to the node.
    for port, called in ((orthanc.dicom_port, "ORTHANC"), (node.port, "AI_NODE")):
        sent = storescu_ct(port, called)
        assert sent.returncode == 0, sent.stderr[-2000:]
    wait_until(lambda: job_states(node) == [JOB_DONE], timeout=180)
    wait_until(lambda: outbox_states(node) == [OUTBOX_SENT] * 2, timeout=60)
    in_pacs = orthanc.instances_of_study(ct_uid)
    assert len(in_pacs) == 248 + 2
    results = {i["SOPInstanceUID"]: i for i in in_pacs if i["Modality"] in ("SEG", "SR")}
    assert {i["Modality"] for i in results.values()} == {"SEG", "SR"}
    kept = stored_results(node, ct_uid)
    assert set(kept) == {"SEG 901", "SR 902"}
    source = pydicom.dcmread(next(CT_SERIES.glob("*.dcm")), stop_before_pixels=True)
    for result in kept.values():
        assert result.SOPInstanceUID in results
        # Re-identified: the patient's own identity, no de-identification flags left.
        assert result.PatientID == source.PatientID and result.PatientName == source.PatientName
        assert "PatientIdentityRemoved" not in result
        assert "not for primary diagnosis" in result.SeriesDescription
        assert dciodvfy_errors(result.filename) == set()  # the node's stored file
        pacs_copy = pydicom.dcmread(io.BytesIO(orthanc.file(result.SOPInstanceUID)))
        assert pacs_copy.StudyInstanceUID == ct_uid
    seg = kept["SEG 901"]
    assert seg.SOPClassUID == SEG
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    report = kept["SR 902"]
    assert report.SOPClassUID == COMPREHENSIVE_3D_SR
    # The audit trail: the series de-identified for the model, the results sent to the PACS.
    found = audit_messages(node.storage / "audit.log")
    (accessed,) = of_event(found, ("110103", "", "R"))
    assert "for model ct_tissue" in etree.tostring(accessed).decode()
    assert any(b"ORTHANC" in etree.tostring(m) for m in of_event(found, ("110104", "", "R")))
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == ct_uid

    # The PACS goes down; a chest radiograph comes in; its results wait, then arrive once.
    orthanc.stop()
    folder = copy_files(CR_CHEST.parent, [CR_CHEST.name])
    assert dcmsend(node.port, folder).returncode == 0
    wait_until(lambda: job_states(node) == [JOB_DONE, JOB_DONE], timeout=120)
    wait_until(lambda: len(outbox_states(node)) == 4, timeout=30)
    cr = pydicom.dcmread(CR_CHEST, stop_before_pixels=True)
    kept = stored_results(node, cr.StudyInstanceUID)
    assert set(kept) == {"SEG 903", "SR 904"}
    explanation = kept["SEG 903"]
    assert explanation.SegmentationType == "BINARY"  # bands of the Grad-CAM map
    assert (explanation.Rows, explanation.Columns) == (cr.Rows, cr.Columns)
    assert (
        explanation.ReferencedSeriesSequence[0]
        .ReferencedInstanceSequence[0]
        .ReferencedSOPInstanceUID
        == cr.SOPInstanceUID
    )
    for result in kept.values():
        assert result.PatientID == cr.PatientID
        assert dciodvfy_errors(result.filename) == set()  # the node's stored file
    # The CR is an adult's: its job's note says the finding was not assessed, and why.
    assert (
        "image 1 not assessed, outside the model's domain (patient age outside the trained"
        in cli(node, "jobs", "show", "2").stdout
    )
    # What is waiting, and why, is visible over HTTP.
    status = wait_until(lambda: (s := node_status(node))["not_delivered"][1:] and s, timeout=30)
    assert status["jobs"] == {JOB_DONE: 2}
    assert status["deliveries"] == {"pacs": {OUTBOX_SENT: 2, OUTBOX_PENDING: 2}}
    assert all("cannot reach peer 'pacs'" in r["last_error"] for r in status["not_delivered"])
    # The node is killed meanwhile: what waits is still delivered after its restart.
    node.stop(signal.SIGKILL)
    node.start()
    orthanc.start()
    wait_until(lambda: outbox_states(node) == [OUTBOX_SENT] * 4, timeout=60)
    in_pacs = orthanc.instances_of_study(cr.StudyInstanceUID)
    assert sorted(i["Modality"] for i in in_pacs) == ["SEG", "SR"]  # the CR went nowhere

    # Running both jobs again stores and sends nothing new.
    instances_before = count(node, instances)
    assert cli(node, "jobs", "retry", "1").returncode == 0
    assert cli(node, "jobs", "retry", "2").returncode == 0
    wait_until(lambda: job_states(node) == [JOB_DONE, JOB_DONE], timeout=120)
    assert count(node, instances) == instances_before
    assert outbox_states(node) == [OUTBOX_SENT] * 4
    shown = cli(node, "jobs", "show", "1").stdout
    assert "ct_tissue 1.0.0: 2 result(s) stored by an earlier run; 0 queued now" in shown
    assert "no routing rule matches" not in shown  # its own results are not routed
