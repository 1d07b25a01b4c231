"""Jobs end to end: a complete study is routed, de-identified copies go to a research peer
(DCMTK's storescp) through the outbox, which waits out the peer's downtime; burned-in text is
held back; running a job again sends nothing twice."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pydicom
from lxml import etree
from sqlalchemy import select

from dicom_node.index.schema import JOB_DONE, OUTBOX_PENDING, OUTBOX_SENT, jobs, outbox

from .conftest import CT_SERIES, SHARED_DATA, dcmsend
from .test_audit import audit_messages, of_event
from .test_durability import wait_until

NIH_SC = next((SHARED_DATA / "cxr_dicom").glob("nih_*.dcm"))
CT_NAMES = ["1-001.dcm", "1-002.dcm", "1-003.dcm"]


def job_rows(node) -> list:
    with node.engine().connect() as connection:
        return list(connection.execute(select(jobs.c.id, jobs.c.state)))


def outbox_rows(node) -> list:
    with node.engine().connect() as connection:
        return list(
            connection.execute(select(outbox.c.state, outbox.c.attempts, outbox.c.last_error))
        )


def cli(node, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "dicom_node", "--config", str(node.config_path), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=node.root)


def ct_with_a_radiograph(study: Path) -> None:
    """A study in the folder ``study`` (made): three slices of the shared chest CT and, in the
    same study, a secondary capture radiograph (which may carry burned-in text)."""
    study.mkdir()
    for name in CT_NAMES:
        (study / name).write_bytes((CT_SERIES / name).read_bytes())
    radiograph = pydicom.dcmread(NIH_SC)
    radiograph.StudyInstanceUID = pydicom.dcmread(CT_SERIES / CT_NAMES[0]).StudyInstanceUID
    radiograph.save_as(study / "radiograph.dcm")


def test_research_copies_are_de_identified_and_delivered_once(make_node, tmp_path, research_peer):
    port, received, start_peer = research_peer
    study = tmp_path / "study"
    ct_with_a_radiograph(study)
    route = {"research_destinations": ["research"]}
    node = make_node(
        peers={"research": {"ae_title": "RESEARCH", "host": "127.0.0.1", "port": port}},
        study={"stable_seconds": 1, "check_interval_seconds": 0.2},
        outbox={"first_retry_seconds": 0.3, "max_retry_seconds": 1},
        inference={
            "routes": [
                {
                    "name": "ct-research",
                    "modality": ["CT"],
                    "deidentification": {"dates": "shifted", "clean_descriptors": True},
                    **route,
                },
                {"name": "radiograph-research", "modality": ["DX", "CR"], **route},
            ]
        },
    )
    node.start()
    assert dcmsend(node.port, study).returncode == 0

    # The peer is down: the job is done, its copies wait in the outbox.
    wait_until(lambda: [state for _, state in job_rows(node)] == [JOB_DONE], timeout=60)
    wait_until(lambda: all(attempts >= 1 for _, attempts, _ in outbox_rows(node)))
    rows = outbox_rows(node)
    assert len(rows) == 3 and {state for state, _, _ in rows} == {OUTBOX_PENDING}
    assert "cannot reach peer 'research'" in rows[0][2]
    job_id = job_rows(node)[0][0]
    shown = cli(node, "jobs", "show", str(job_id)).stdout
    assert "route ct-research: 3 de-identified instance(s) queued for research" in shown
    assert "route radiograph-research: held back" in shown and "secondary capture" in shown

    # The peer comes up: everything is delivered, and the outgoing copies are removed.
    start_peer()
    wait_until(lambda: {s for s, _, _ in outbox_rows(node)} == {OUTBOX_SENT}, timeout=30)
    assert not list((node.storage / "outgoing").rglob("*.dcm"))
    copies = sorted(received.iterdir())
    assert len(copies) == 3
    # The audit trail: the export (naming the original patient) and the copies as they left.
    found = audit_messages(node.storage / "audit.log")
    (export,) = of_event(found, ("110106", "", "R"))
    original_id = pydicom.dcmread(CT_SERIES / CT_NAMES[0]).PatientID
    assert original_id in etree.tostring(export).decode()
    assert "de-identified" in etree.tostring(export).decode()
    (sent,) = [m for m in of_event(found, ("110104", "", "R")) if b"RESEARCH" in etree.tostring(m)]
    assert original_id not in etree.tostring(sent).decode()  # what left is pseudonymous
    originals = {pydicom.dcmread(CT_SERIES / n).InstanceNumber: CT_SERIES / n for n in CT_NAMES}
    for path in copies:
        copy = pydicom.dcmread(path)
        original = pydicom.dcmread(originals[copy.InstanceNumber])
        assert copy.PatientIdentityRemoved == "YES" and copy.PatientID != original.PatientID
        assert copy.StudyInstanceUID.startswith("2.25.") and copy.StudyDate != original.StudyDate
        assert copy.SeriesDescription == original.SeriesDescription  # clean descriptors
        assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert copy.PixelData == original.PixelData

    # Running the job again queues nothing twice.
    assert cli(node, "jobs", "retry", str(job_id)).returncode == 0
    wait_until(
        lambda: (
            job_rows(node)[0][1] == JOB_DONE
            and "earlier run" in cli(node, "jobs", "show", str(job_id)).stdout
        ),
        timeout=30,
    )
    time.sleep(1.5)
    assert len(list(received.iterdir())) == 3 and len(outbox_rows(node)) == 3
    assert "sent" in cli(node, "outbox").stdout
