"""FHIR reports delivered to a real FHIR server: end to end from a study sent by DCMTK to the
DiagnosticReport in the EHR, also when the server was down and the node was killed meanwhile;
the server's refusal (400 with an OperationOutcome) is final; each authentication method."""

from __future__ import annotations

import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pydicom
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree

from dicom_node.config import FHIR_DESTINATION, parse_config
from dicom_node.index.database import open_engine
from dicom_node.index.schema import JOB_DONE, OUTBOX_FAILED, OUTBOX_PENDING, OUTBOX_SENT
from dicom_node.outbox.queue import open_outbox
from dicom_node.outbox.sender import OutboxSender
from fhir_bridge.client import FhirClient, Verdict
from fhir_bridge.settings import FhirSettings

from .conftest import CR_CHEST, dcmsend, free_port
from .fhir_server import FhirServer
from .test_audit import audit_messages, of_event
from .test_durability import wait_until
from .test_fhir_resources import bundle_of
from .test_research_forwarding import cli, job_rows
from .test_results_delivery import node_status

MRN = "urn:oid:1.2.826.0.1.3680043.9.7697.1"


def fhir_rows(node) -> list[tuple[str, int]]:
    return [
        (row["state"], row["attempts"])
        for row in node_status(node)["not_delivered"]
        if row["destination"] == FHIR_DESTINATION
    ]


def test_reports_reach_the_ehr_after_an_outage_and_a_restart(make_node, copy_files):
    server = FhirServer()  # not started yet: the EHR is down
    node = make_node(
        fhir={"base_url": server.base_url, "patient_identifier_system": MRN, "retries": 0},
        study={"stable_seconds": 1, "check_interval_seconds": 0.2},
        outbox={"first_retry_seconds": 0.3, "max_retry_seconds": 1},
    )
    node.start()
    assert dcmsend(node.port, copy_files(CR_CHEST.parent, [CR_CHEST.name])).returncode == 0
    wait_until(lambda: [state for _, state in job_rows(node)] == [JOB_DONE], timeout=120)
    # The report waits, and /status says why.
    status = wait_until(lambda: (s := node_status(node))["not_delivered"] and s, timeout=30)
    assert status["deliveries"] == {FHIR_DESTINATION: {OUTBOX_PENDING: 1}}
    (waiting,) = status["not_delivered"]
    assert "FHIR server unreachable" in waiting["last_error"]
    assert "fhir" in cli(node, "outbox", "list").stdout
    # Killed meanwhile; the EHR comes back; the report arrives after the restart.
    node.stop(signal.SIGKILL)
    server.start()
    try:
        node.start()
        wait_until(
            lambda: node_status(node)["deliveries"] == {FHIR_DESTINATION: {OUTBOX_SENT: 1}},
            timeout=60,
        )
        cr = pydicom.dcmread(CR_CHEST, stop_before_pixels=True)
        (report,) = server.reports_of_patient(MRN, str(cr.PatientID))
        assert report["status"] == "preliminary"
        assert "cxr_pneumonia 1.0.0" in report["conclusion"]
        (study,) = server.search(
            "ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{cr.StudyInstanceUID}"
        )
        assert study["subject"] == report["subject"]
        assert {s["modality"]["code"] for s in study["series"]} == {"CR", "SEG", "SR"}
        observations = server.search("Observation", subject=report["subject"]["reference"])
        assert len(observations) == 3
        (posted,) = of_event(audit_messages(node.storage / "audit.log"), ("110106", "", "R"))
        text = etree.tostring(posted).decode()
        assert "FHIR DiagnosticReport posted" in text and str(cr.PatientID) in text
        assert str(cr.StudyInstanceUID) in text
        # Running the job again queues nothing new and the EHR holds one report.
        assert cli(node, "jobs", "retry", "1").returncode == 0
        wait_until(lambda: [state for _, state in job_rows(node)] == [JOB_DONE], timeout=120)
        assert "0 queued now" in cli(node, "jobs", "show", "1").stdout
        assert node_status(node)["deliveries"] == {FHIR_DESTINATION: {OUTBOX_SENT: 1}}
        assert len(server.search("DiagnosticReport")) == 1
    finally:
        server.stop()


def fhir_outbox(tmp_path, base_url: str):
    config = parse_config(
        {
            "storage": {"path": str(tmp_path / "storage")},
            "fhir": {"base_url": base_url, "patient_identifier_system": MRN, "retries": 0},
        }
    )
    config.storage.path.mkdir()
    box = open_outbox(config, open_engine(config.storage.database_url))
    box.recover()
    return config, box


@pytest.mark.parametrize("fault", ["down", "503"])
def test_a_server_that_is_unavailable_is_tried_once_a_round(tmp_path, flaky_server, fault):
    url, answers, seen = flaky_server
    answers.extend([503] * 10)
    if fault == "down":
        url = f"http://127.0.0.1:{free_port()}/fhir"
    config, box = fhir_outbox(tmp_path, url)
    for uid in ("1.2.3", "1.2.4", "1.2.5"):
        assert box.enqueue(FHIR_DESTINATION, uid, [b"{}"], None)
    sender = OutboxSender(config, box, FhirClient(config.fhir))
    assert sender.run_once(time.time()) == 0
    rows = box.rows()
    assert [(r.state, r.attempts) for r in rows] == [(OUTBOX_PENDING, 1)] * 3
    said = "FHIR server unreachable" if fault == "down" else "FHIR server answered 503"
    assert all(said in r.last_error for r in rows)
    assert len(seen) == (0 if fault == "down" else 1), "one request for the round"


def test_a_report_the_server_refuses_is_failed_at_once_with_its_outcome(
    tmp_path, fhir_server, caplog
):
    config, box = fhir_outbox(tmp_path, fhir_server.base_url)
    invalid = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "birthDate": "2024-02-31T10:00"},
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    assert box.enqueue(FHIR_DESTINATION, "1.2.3", [json.dumps(invalid).encode()], None)
    sender = OutboxSender(config, box, FhirClient(config.fhir))
    now = time.time()
    assert sender.run_once(now) == 0
    (row,) = box.rows()
    assert (row.state, row.attempts) == (OUTBOX_FAILED, 1)
    assert "FHIR server answered 400" in row.last_error
    assert "Invalid date format at Patient.birthDate" in row.last_error  # the server's words
    (logged,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "refused report 1: FHIR server answered 400: error structure at " in logged
    assert "Patient.birthDate" in logged
    assert "Invalid date" not in logged, "the log does not quote what the server quotes"
    assert sender.run_once(now + 3600) == 0, "not tried again"
    assert box.rows()[0].attempts == 1
    assert fhir_server.search("Patient") == []


def rsa_key_pair(folder) -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = folder / "node-key.pem"
    public = folder / "node-key.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return str(private), str(public)


def auth_cases(folder) -> list[tuple[str, dict, dict]]:
    """(server auth, node auth settings, the same with wrong credentials)"""
    private, public = rsa_key_pair(folder)
    wrong_private, _ = rsa_key_pair(folder / "other")
    oauth = {"method": "oauth2", "client_id": "ai-node"}
    return [
        ("bearer:s3cret", {"method": "bearer", "token": "s3cret"}, {"token": "guess"}),
        (
            "basic:node:pa55",
            {"method": "basic", "username": "node", "password": "pa55"},
            {"password": "guess"},
        ),
        ("oauth2:ai-node:pa55", {**oauth, "client_secret": "pa55"}, {"client_secret": "guess"}),
        (
            f"oauth2jwt:ai-node:{public}",
            {**oauth, "private_key_file": private, "key_id": "node-1"},
            {"private_key_file": wrong_private},
        ),
    ]


@pytest.mark.parametrize("case", range(4), ids=["bearer", "basic", "oauth2", "oauth2-jwt"])
def test_each_authentication_method(case, tmp_path, classified):
    (tmp_path / "other").mkdir()
    server_auth, auth, wrong = auth_cases(tmp_path)[case]
    server = FhirServer(server_auth)
    server.start()
    try:
        if auth["method"] == "oauth2":
            auth["token_url"] = server.token_url
        body = json.dumps(bundle_of(classified[-1]))

        def client(settings: dict) -> FhirClient:
            return FhirClient(
                FhirSettings(base_url=server.base_url, patient_identifier_system=MRN, auth=settings)
            )

        delivered = client(auth).post_transaction(body.encode())
        assert delivered.verdict == Verdict.DELIVERED, delivered.message
        refused = client({**auth, **wrong}).post_transaction(body.encode())
        assert refused.verdict == Verdict.REFUSED
        assert "401" in refused.message
    finally:
        server.stop()


def test_a_missing_private_key_stops_the_node_at_start_with_the_key_named(make_node, tmp_path):
    node = make_node(
        fhir={
            "base_url": "http://127.0.0.1:9/fhir",
            "patient_identifier_system": MRN,
            "auth": {
                "method": "oauth2",
                "client_id": "ai-node",
                "token_url": "http://127.0.0.1:9/token",
                "private_key_file": str(tmp_path / "absent.pem"),
            },
        }
    )
    with pytest.raises(RuntimeError, match="exited"):
        node.start()
    assert "fhir.auth.private_key_file: cannot read" in node.log()


@pytest.fixture
def flaky_server():
    """An HTTP endpoint answering each POST with the next status of ``answers`` (then 200): a
    FHIR server's faults, which the real one in the tests does not produce on demand."""
    answers: list[int] = []
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802  (http.server's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.path)
            status = answers.pop(0) if answers else 200
            body = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "transient"}],
            }
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/fhir", answers, seen
    server.shutdown()


@pytest.mark.parametrize(
    ("statuses", "verdict", "requests_made"),
    [
        ([503, 500], Verdict.DELIVERED, 3),  # retried with backoff, then through
        ([503, 502, 504], Verdict.UNAVAILABLE, 3),  # still down: left to the outbox
        ([422], Verdict.REFUSED, 1),  # a 4xx is not retried
    ],
)
def test_server_errors_are_retried_and_client_errors_are_not(
    flaky_server, statuses, verdict, requests_made
):
    url, answers, seen = flaky_server
    answers.extend(statuses)
    client = FhirClient(FhirSettings(base_url=url, patient_identifier_system=MRN, retries=2))
    assert client.post_transaction(b"{}").verdict == verdict
    assert len(seen) == requests_made
