"""The console's studies and running-work API against a running node: studies sent by DCMTK are
found by patient ID, name, accession number and date; a study's timeline shows what the node did
(received, stable, the model and the forwarding with their durations, what was held back and why,
results stored, each delivery with the peer's answer); the actions (run the job again, retry a
delivery now) need the write right and the console's header, and work."""

from __future__ import annotations

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from dicom_node.index.schema import JOB_DONE

from .browser import artefacts, browser_report, needs_chromium
from .conftest import CR_CHEST, CT_SERIES, dcmsend, free_port
from .test_console import GUARD, READ, READER, WRITE, WRITER
from .test_durability import wait_until
from .test_fhir_delivery import MRN
from .test_research_forwarding import (
    CT_NAMES,
    NIH_SC,
    ct_with_a_radiograph,
    job_rows,
    outbox_rows,
)

CT_PATIENT = str(pydicom.dcmread(CT_SERIES / CT_NAMES[0], stop_before_pixels=True).PatientID)
CT_STUDY = str(pydicom.dcmread(CT_SERIES / CT_NAMES[0], stop_before_pixels=True).StudyInstanceUID)
#: a patient name and a study description that are markup: the pages must show them as text
HOSTILE = {"name": "<b>Bold</b>^<i>Italic</i>", "description": '<img src=x onerror="pwned=1">'}
CR_STUDY = str(pydicom.dcmread(CR_CHEST, stop_before_pixels=True).StudyInstanceUID)


def node_with_studies(make_node, tmp_path, research_peer):
    """A node whose research peer is down, with two studies it worked on: the CT slices (sent
    on to research, the secondary capture beside them held back) and the chest radiograph (the
    classifier ran). Its deliveries wait an hour between tries: only a retry sends them now."""
    port, _, start_peer = research_peer
    ct = tmp_path / "ct"
    ct_with_a_radiograph(ct)
    cr = tmp_path / "cr"
    cr.mkdir()
    (cr / CR_CHEST.name).write_bytes(CR_CHEST.read_bytes())
    node = make_node(
        http={"dicomweb": {"auth": {"basic_users": [READER, WRITER]}}},
        peers={"research": {"ae_title": "RESEARCH", "host": "127.0.0.1", "port": port}},
        study={"stable_seconds": 1, "check_interval_seconds": 0.2},
        outbox={"first_retry_seconds": 3600, "max_retry_seconds": 3600},
        # the EHR's FHIR server is down too: the radiograph's report waits
        fhir={
            "base_url": f"http://127.0.0.1:{free_port()}/fhir",
            "patient_identifier_system": MRN,
            "retries": 0,
        },
        inference={
            "routes": [
                {"name": "ct-research", "modality": ["CT"], "research_destinations": ["research"]},
                {"name": "sc-research", "modality": ["DX"], "research_destinations": ["research"]},
                {"name": "chest", "modality": ["CR"], "models": ["cxr_pneumonia"]},
            ]
        },
    )
    node.start()
    for folder in (ct, cr):
        assert dcmsend(node.port, folder).returncode == 0
    wait_until(lambda: [state for _, state in job_rows(node)] == [JOB_DONE] * 2, timeout=180)
    wait_until(lambda: all(attempts >= 1 for _, attempts, _ in outbox_rows(node)), timeout=30)
    return node, start_peer


def test_studies_are_found_followed_and_acted_on(make_node, tmp_path, research_peer):
    node, start_peer = node_with_studies(make_node, tmp_path, research_peer)
    base = f"http://127.0.0.1:{node.http_port}/ui/api"

    def found(**form) -> list[str]:
        answer = requests.get(f"{base}/studies", params=form, auth=READ, timeout=10)
        assert answer.status_code == 200, answer.text
        return [study["study_instance_uid"] for study in answer.json()["studies"]]

    # Nothing without credentials.
    assert requests.get(f"{base}/studies", timeout=10).status_code == 401
    assert requests.get(f"{base}/work", timeout=10).status_code == 401
    assert requests.post(f"{base}/jobs/1/retry", headers=GUARD, timeout=10).status_code == 401

    # Search: the same matching as C-FIND (IDs exact, names case-insensitive, date ranges).
    assert found() == [CT_STUDY, CR_STUDY]  # newest first
    assert found(patient_id=CT_PATIENT) == [CT_STUDY]
    assert found(patient_id=CT_PATIENT[:-1]) == []
    assert found(patient_name="samples^rg") == [CR_STUDY]
    assert found(accession_number="exam Number") == [CR_STUDY]
    assert found(date_from="2004-12-01", date_to="2004-12-31") == [CT_STUDY]
    assert found(date_from="2004-08-26", date_to="2004-08-26") == [CR_STUDY]
    bad = requests.get(f"{base}/studies", params={"date_from": "12/01/2004"}, auth=READ)
    assert bad.status_code == 400 and "date_from" in bad.json()["detail"]
    nul = requests.get(f"{base}/studies", params={"patient_name": "a\x00b"}, auth=READ)
    assert nul.status_code == 400 and "NUL" in nul.json()["detail"]
    listed = requests.get(f"{base}/studies", auth=READ, timeout=10).json()["studies"]
    assert {s["study_instance_uid"]: s["modalities"] for s in listed}[CT_STUDY] == ["CT", "DX"]
    assert [s["job"] for s in listed] == [JOB_DONE, JOB_DONE]

    # The CT's timeline: received, stable, forwarded (timed), held back and why, each delivery
    # with the peer's answer; in time order.
    answer = requests.get(f"{base}/studies/{CT_STUDY}", auth=READ, timeout=10)
    assert answer.status_code == 200
    shown = answer.json()
    assert shown["study"]["patient_id"] == CT_PATIENT
    events = shown["timeline"]
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    kinds = [e["kind"] for e in events]
    assert (
        kinds[:2] == ["received", "received"] and "last instance received (4" in events[1]["text"]
    )
    assert kinds.index("stable") < kinds.index("job") < kinds.index("step") < kinds.index("done")
    (forwarding,) = [e for e in events if e["kind"] == "step"]
    assert "route ct-research: research forwarding" in forwarding["text"]
    assert forwarding["duration"] >= 0
    (held,) = [e for e in events if e["kind"] == "held back"]
    assert "route sc-research" in held["text"] and "secondary capture" in held["text"]
    queued, tried = [e["text"] for e in events if e["kind"] == "delivery"]
    assert queued == "3 object(s) queued for research"
    assert tried.startswith("3 object(s) pending for research after up to 1 attempt(s); the peer")
    assert "cannot reach peer 'research'" in tried
    assert len(shown["deliveries"]) == 3
    assert {d["state"] for d in shown["deliveries"]} == {"pending"}

    # The radiograph's: the classifier ran (timed), its results are stored in the study.
    events = requests.get(f"{base}/studies/{CR_STUDY}", auth=READ, timeout=10).json()["timeline"]
    (model,) = [e for e in events if e["kind"] == "step"]
    assert "cxr_pneumonia" in model["text"] and model["duration"] > 0
    assert any(e["kind"] == "results" and "2 result(s) stored" in e["text"] for e in events)
    queued, tried = [e["text"] for e in events if e["kind"] == "fhir"]
    assert queued == "1 FHIR report(s) queued for fhir"
    assert tried.startswith("1 FHIR report(s) pending for fhir after up to 1 attempt(s)")
    assert "FHIR server unreachable" in tried
    unknown = requests.get(f"{base}/studies/1.2.3.4", auth=READ, timeout=10)
    assert unknown.status_code == 404

    # The running work: nothing running now, the outbox by destination with the peer's answer.
    work = requests.get(f"{base}/work", auth=READ, timeout=10).json()
    assert work["running"] == []
    assert work["deliveries"] == {"research": {"pending": 3}, "fhir": {"pending": 1}}
    answers = {row["destination"]: row["last_error"] for row in work["not_delivered"]}
    assert "cannot reach peer 'research'" in answers["research"]
    assert "FHIR server unreachable" in answers["fhir"]
    status = requests.get(f"http://127.0.0.1:{node.http_port}/status", timeout=10).json()
    assert status["running"] == [] and status["jobs"] == {JOB_DONE: 2}

    # Actions: refused to a reader (403) and to a request without the console's header (403,
    # logged); a writer's retry of a delivery sends it now, to the peer that is back.
    delivery = shown["deliveries"][0]["id"]
    retry = f"{base}/deliveries/{delivery}/retry"
    assert requests.post(retry, headers=GUARD, auth=READ, timeout=10).status_code == 403
    assert requests.post(retry, auth=WRITE, timeout=10).status_code == 403
    assert "refused POST /ui/api/deliveries" in node.log()
    start_peer()
    answer = requests.post(retry, headers=GUARD, auth=WRITE, timeout=10)
    assert answer.status_code == 200, answer.text

    def delivery_states() -> dict[int, str]:
        shown = requests.get(f"{base}/studies/{CT_STUDY}", auth=READ, timeout=10).json()
        return {d["id"]: d["state"] for d in shown["deliveries"]}

    wait_until(lambda: delivery_states()[delivery] == "sent", timeout=30)
    assert sorted(delivery_states().values()) == ["pending", "pending", "sent"]  # only that one
    assert "console: writer made delivery" in node.log()

    # Running the job again: a reader may not; a writer may, once it is finished.
    job = shown["jobs"][0]["id"]
    again = f"{base}/jobs/{job}/retry"
    assert requests.post(again, headers=GUARD, auth=READ, timeout=10).status_code == 403
    assert requests.post(again, headers=GUARD, auth=WRITE, timeout=10).status_code == 200
    missing = requests.post(f"{base}/jobs/999/retry", headers=GUARD, auth=WRITE, timeout=10)
    assert missing.status_code == 404

    def attempts() -> int:
        shown = requests.get(f"{base}/studies/{CT_STUDY}", auth=READ, timeout=10).json()
        (state,) = shown["jobs"]
        return state["attempts"] if state["state"] == JOB_DONE else 0

    wait_until(lambda: attempts() == 2, timeout=60)
    events = requests.get(f"{base}/studies/{CT_STUDY}", auth=READ, timeout=10).json()["timeline"]
    assert any(e["text"] == f"job {job} started (attempt 2)" for e in events)
    # the first attempt keeps its own start and end (index.schema.job_attempts)
    (first,) = [e for e in events if e["text"] == f"job {job} attempt 1 done"]
    assert first["kind"] == "done" and first["duration"] >= 0
    # No patient identifier in the log at INFO.
    assert CT_PATIENT not in node.log()


@needs_chromium
@pytest.mark.parametrize("database_kind", ["sqlite"])  # what the browser shows: SQLite alone
def test_an_engineer_follows_a_study_and_retries_its_delivery_in_chromium(
    make_node, tmp_path, research_peer
):
    """Screenshots stay in the test's folder, or under $DICOM_NODE_TEST_ARTEFACTS."""
    node, start_peer = node_with_studies(make_node, tmp_path, research_peer)
    start_peer()  # back: the retry the engineer presses goes through
    # A study whose patient name and description are markup.
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    image = pydicom.dcmread(NIH_SC)
    image.PatientName = HOSTILE["name"]
    image.StudyDescription = HOSTILE["description"]
    image.StudyInstanceUID, image.SeriesInstanceUID, image.SOPInstanceUID = (
        generate_uid() for _ in range(3)
    )
    image.save_as(hostile / "hostile.dcm")
    assert dcmsend(node.port, hostile).returncode == 0
    wait_until(lambda: [state for _, state in job_rows(node)] == [JOB_DONE] * 3, timeout=60)
    out = artefacts(tmp_path, "console-studies")
    arguments = {
        "url": f"http://127.0.0.1:{node.http_port}/ui/",
        "user": WRITER["username"],
        "password": WRITER["password"],
        "reader": READER["username"],
        "readerPassword": READER["password"],
        "patientId": CT_PATIENT,
        "hostile": ["<b>Bold</b>, <i>Italic</i>", HOSTILE["description"]],
        "out": str(out),
    }
    report = browser_report("console_studies.mjs", arguments)
    assert report["errors"] == []
    assert report["hostile"] == {"ran": False, "elements": 0, "shown": True}
    assert report["axe"] == {"search": [], "study": [], "work": []}
    assert CT_PATIENT in report["found"] and "CT, DX" in report["found"]
    for text in ("first instance received", "research forwarding", "held back", "job 1 done"):
        assert text in report["timeline"]
    assert "cannot reach peer 'research'" in report["timeline"]
    assert "\tpending\t" in report["before"] and "\tsent\t" in report["after"]
    assert "due now; done" in report["status"]
    for text in ("job 1 attempt 1 started", "job 1 attempt 1 done", "job 1 started (attempt 2)"):
        assert text in report["rerun"]
    assert "Healthy" in report["work"] and "No job is running." in report["work"]
    assert "research\t2\t1\t0" in report["work"]  # pending, sent (by the retry), failed
    assert report["readerSession"] == "reader (read only)" and report["readerButtons"] == 0
    for name in (
        "0-studies",
        "1-search",
        "2-timeline",
        "3-retried",
        "3-rerun",
        "4-work",
        "5-read-only",
    ):
        assert (out / f"{name}.png").stat().st_size > 10_000
