"""The audit trail (IHE ATNA, PS3.15 A.5): a message for each event, driven with DCMTK and
DICOMweb requests against a real node, each validated against the DICOM audit message schema
(tests/data/dicom_audit_message.rng); the audit file's framing and mode."""

from __future__ import annotations

import base64
import socketserver
import ssl
import stat
import subprocess
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pydicom
import pytest
import requests
from lxml import etree

from dicom_node.audit import messages
from dicom_node.dicomweb import pixel_audit

from .conftest import CT_SERIES, DCMTK, TOOL_ENV, dcmsend, dcmtk, free_port, wait_for_port
from .test_dicomweb_access import self_signed
from .test_query_retrieve import SERIES_UID, STUDY_UID, find, move_study

SCHEMA = etree.RelaxNG(etree.parse(str(Path(__file__).parent / "data" / "dicom_audit_message.rng")))


def valid(xml: bytes) -> etree._Element:
    """The message parsed, after checking it against the schema."""
    document = etree.fromstring(xml)
    assert SCHEMA.validate(document), (SCHEMA.error_log, xml)
    return document


def audit_messages(path: Path) -> list[etree._Element]:
    """Every message of the audit file (one a line), each validated."""
    return [valid(line) for line in path.read_bytes().splitlines()]


def event_of(message: etree._Element) -> tuple[str, str, str]:
    """(EventID, EventTypeCode or "", EventActionCode) of a message."""
    identification = message.find("EventIdentification")
    types = identification.findall("EventTypeCode")
    return (
        identification.find("EventID").get("csd-code"),
        types[0].get("csd-code") if types else "",
        identification.get("EventActionCode"),
    )


def outcome_of(message: etree._Element) -> str:
    """EventOutcomeIndicator: "0" success, "4" minor failure, "8" serious failure."""
    return message.find("EventIdentification").get("EventOutcomeIndicator")


def of_event(found: list[etree._Element], event: tuple[str, str, str]) -> list[etree._Element]:
    return [message for message in found if event_of(message) == event]


def test_every_event_builder_validates():
    source = messages.AuditSource("AI_NODE", "host", 1)
    study = messages.StudyData("1.2.3", "P\x01ID", "Doe^Jane\nline two")
    study.add("1.2.840.10008.5.1.4.1.1.2", 3)
    peer = messages.Participant("MODALITY", True, messages.SOURCE, "127.0.0.1")
    events = [
        messages.application_activity(True, "root"),
        messages.configuration_loaded("/etc/node.yaml", b"\x00" * 32),
        messages.association(peer, accepted=True),
        messages.association(peer, accepted=False, reason="called AE title not recognised"),
        messages.instances_stored(peer, [study]),
        messages.instances_sent(peer, [study]),
        messages.query(peer, "1.2.840.10008.5.1.4.1.2.2.1", messages.SOP_CLASS_UID, b"\x00\x08"),
        messages.access_denied(peer, "/dicomweb/studies", "wrong password", False),
        messages.instances_accessed([study], "de-identified for model cxr_pneumonia 1.0.0"),
        messages.export([peer], [study], "FHIR DiagnosticReport posted"),
    ]
    for event in events:
        xml = messages.to_xml(event, source, datetime.now().astimezone())
        assert b"\n" not in xml
        valid(xml)


@pytest.fixture
def destination(tmp_path):
    """DCMTK's storescp as a C-MOVE destination."""
    port = free_port()
    folder = tmp_path / "moved"
    folder.mkdir()
    process = subprocess.Popen(
        [str(DCMTK / "storescp"), "-aet", "DEST", "-od", str(folder), str(port)], env=TOOL_ENV
    )
    wait_for_port(port, process)
    yield {"ae_title": "DEST", "host": "127.0.0.1", "port": port}
    process.terminate()
    process.wait(timeout=10)


def test_dimse_events_are_audited(make_node, copy_files, destination, tmp_path):
    node = make_node(peers={"dest": destination})
    node.start()
    sent = copy_files(CT_SERIES, [f"1-{n:03d}.dcm" for n in range(1, 4)])
    assert dcmsend(node.port, sent).returncode == 0
    answers, _ = find(node, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={STUDY_UID}")
    assert len(answers) == 1
    assert move_study(node, "DEST").returncode == 0
    got = tmp_path / "got"
    got.mkdir()
    get = dcmtk(
        "getscu", "-S", "-aec", "AI_NODE", "127.0.0.1", str(node.port),
        "-k", "QueryRetrieveLevel=SERIES", "-k", f"SeriesInstanceUID={SERIES_UID}",
        "-od", str(got),
    )  # fmt: skip
    assert len(list(got.iterdir())) == 3, get.stderr[-2000:]
    rejected = dcmtk("echoscu", "-aec", "SOMEONE_ELSE", "127.0.0.1", str(node.port))
    assert rejected.returncode != 0
    assert node.stop() == 0

    audit_file = node.storage / "audit.log"
    assert stat.S_IMODE(audit_file.stat().st_mode) == 0o600
    found = audit_messages(audit_file)
    kinds = Counter(event_of(message) for message in found)
    assert kinds[("110100", "110120", "E")] == 1  # started
    assert kinds[("110100", "110121", "E")] == 1  # stopped
    assert kinds[("110113", "110131", "E")] == 1  # configuration loaded
    assert kinds[("110113", "110126", "E")] == 1  # association rejected
    assert kinds[("110114", "110122", "E")] >= 4  # associations accepted
    assert kinds[("110112", "", "E")] == 1  # the C-FIND
    # One message for the three instances the association stored, not one per instance.
    (stored,) = of_event(found, ("110104", "", "C"))
    sop_class = stored.find(".//ParticipantObjectDescription/SOPClass")
    assert sop_class.get("NumberOfInstances") == "3"
    study = stored.find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='3']")
    assert study.get("ParticipantObjectID") == STUDY_UID
    patient = stored.find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='1']")
    assert patient.get("ParticipantObjectID")
    sent_out = of_event(found, ("110104", "", "R"))  # the C-MOVE and the C-GET
    assert len(sent_out) == 2
    move = sent_out[0]
    assert [p.get("UserID") for p in move.findall("ActiveParticipant")][1] == "DEST"
    (rejection,) = of_event(found, ("110113", "110126", "E"))
    assert rejection.find("EventIdentification").get("EventOutcomeIndicator") == "4"


def stow_body(path: Path) -> tuple[bytes, str]:
    boundary = "audit-test-boundary"
    body = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    body += path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_dicomweb_events_are_audited(make_node):
    users = [
        {"username": "reader", "password": "reader-password"},
        {"username": "writer", "password": "writer-password", "write": True},
    ]
    node = make_node(http={"dicomweb": {"auth": {"basic_users": users}}})
    node.start()
    root = f"http://127.0.0.1:{node.http_port}/dicomweb"
    body, content_type = stow_body(sorted(CT_SERIES.glob("*.dcm"))[0])
    writer, reader = ("writer", "writer-password"), ("reader", "reader-password")
    headers = {"Content-Type": content_type}
    assert requests.post(f"{root}/studies", body, headers=headers, auth=writer).status_code == 200
    assert requests.post(f"{root}/studies", body, headers=headers, auth=reader).status_code == 403
    assert requests.get(f"{root}/studies", auth=("reader", "wrong")).status_code == 401
    found = requests.get(f"{root}/studies?PatientID=MIDRC*", auth=reader)
    assert found.status_code == 200 and len(found.json()) == 1
    assert requests.get(f"{root}/studies/{STUDY_UID}", auth=reader).status_code == 200
    # Refused (406: no form the client takes): audited as not sent, never as a read.
    jpeg_baseline = (
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    )
    for path, accept in (("", jpeg_baseline), ("/metadata", "application/dicom+xml")):
        refused = requests.get(
            f"{root}/studies/{STUDY_UID}{path}", headers={"Accept": accept}, auth=reader
        )
        assert refused.status_code == 406, path
    node.stop()

    found = audit_messages(node.storage / "audit.log")
    (stored,) = of_event(found, ("110104", "", "C"))
    users_named = [p.get("UserID") for p in stored.findall("ActiveParticipant")]
    assert users_named[1] == "writer"
    (query,) = of_event(found, ("110112", "", "E"))
    request = query.find("ParticipantObjectIdentification/ParticipantObjectQuery").text
    assert base64.b64decode(request) == b"PatientID=MIDRC*"
    reads = of_event(found, ("110104", "", "R"))
    (read,) = [message for message in reads if outcome_of(message) == "0"]
    assert read.find("ActiveParticipant[@UserID='reader']") is not None
    refusals = [message for message in reads if outcome_of(message) == "4"]
    assert len(refusals) == len(reads) - 1 == 2
    for refusal in refusals:
        description = refusal.find("EventIdentification/EventOutcomeDescription").text
        assert description.startswith("not sent: answered 406: none of the accepted media types")
    (failed_login,) = of_event(found, ("110114", "110122", "E"))
    assert outcome_of(failed_login) == "4"
    (forbidden,) = of_event(found, ("110113", "110132", "E"))
    assert forbidden.find("ActiveParticipant[@UserID='reader']") is not None


def test_pixel_reads_are_audited_once_per_user_client_and_study(make_node):
    """Frames, rendered images, thumbnails and bulk data are reads of the patient's images: the
    first by each user is on disk before its answer; the same user's next reads of the study
    (a viewer's other frames) are covered by it; a refused request is not a read."""
    users = [
        {"username": "reader", "password": "reader-password", "write": True},
        {"username": "other", "password": "other-password"},
    ]
    node = make_node(http={"dicomweb": {"auth": {"basic_users": users}}})
    node.start()
    root = f"http://127.0.0.1:{node.http_port}/dicomweb"
    path = sorted(CT_SERIES.glob("*.dcm"))[0]
    body, content_type = stow_body(path)
    reader, other = ("reader", "reader-password"), ("other", "other-password")
    stowed = requests.post(
        f"{root}/studies", body, headers={"Content-Type": content_type}, auth=reader
    )
    assert stowed.status_code == 200
    instance = f"{root}/studies/{STUDY_UID}/series/{SERIES_UID}/instances/"
    instance += str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    before = len(of_event(audit_messages(node.storage / "audit.log"), ("110104", "", "R")))
    for suffix in ("/frames/1", "/frames/1", "/rendered", "/thumbnail", "/bulkdata/7FE00010"):
        assert requests.get(instance + suffix, auth=reader).status_code == 200, suffix
        reads = of_event(audit_messages(node.storage / "audit.log"), ("110104", "", "R"))
        assert len(reads) == before + 1, suffix  # the first on disk before its answer
    assert requests.get(instance + "/frames/9", auth=other).status_code == 404
    assert requests.get(instance + "/rendered", auth=other).status_code == 200
    node.stop()

    reads = of_event(audit_messages(node.storage / "audit.log"), ("110104", "", "R"))[before:]
    assert [outcome_of(read) for read in reads] == ["0", "0"]
    expected = (("reader", "frames 1"), ("other", "a rendered image"))
    for read, (user, what) in zip(reads, expected, strict=True):
        assert read.find(f"ActiveParticipant[@UserID='{user}']") is not None
        description = read.find("EventIdentification/EventOutcomeDescription").text
        assert description.startswith(f"{what}; this user's further frames")
        objects = read.findall("ParticipantObjectIdentification")
        assert STUDY_UID in [item.get("ParticipantObjectID") for item in objects]


def test_a_pixel_read_is_audited_again_after_the_window(monkeypatch):
    recorded = []
    monkeypatch.setattr(pixel_audit, "record", recorded.append)
    now = [1000.0]
    reads = pixel_audit.StudyReadsAudited(window=300, clock=lambda: now[0])
    row = {"study_instance_uid": "1.2", "patient_id": "P", "patient_name": "N"}
    row["sop_class_uid"] = "1.2.840.10008.5.1.4.1.1.2"
    user = messages.Participant("reader", True, messages.DESTINATION, "10.0.0.1")
    elsewhere = messages.Participant("reader", True, messages.DESTINATION, "10.0.0.2")
    for seconds, who in ((0, user), (299, user), (299, elsewhere), (300, user), (301, user)):
        now[0] = 1000.0 + seconds
        reads.read(who, row, "frames 1")
    assert len(recorded) == 3  # at 0 s, from the other address, and at 300 s


class _SyslogHandler(socketserver.StreamRequestHandler):
    """Reads RFC 5425 frames (MSG-LEN SP SYSLOG-MSG) until the sender closes."""

    def handle(self) -> None:
        while True:
            length = b""
            while (byte := self.rfile.read(1)) not in (b" ", b""):
                length += byte
            if not length:
                return
            self.server.frames.append(self.rfile.read(int(length)))


class SyslogTlsServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """An audit repository: syslog over TLS, keeping each message it receives."""

    daemon_threads = True

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        super().__init__(("127.0.0.1", 0), _SyslogHandler)
        self.frames: list[bytes] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.socket = context.wrap_socket(self.socket, server_side=True)


def test_messages_reach_a_syslog_repository_over_tls(make_node, tmp_path):
    cert_file, key_file = self_signed(tmp_path)
    server = SyslogTlsServer(cert_file, key_file)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    syslog = {"host": "localhost", "port": server.server_address[1], "ca_file": str(cert_file)}
    node = make_node(audit={"file": str(tmp_path / "trail" / "audit.xml"), "syslog": syslog})
    node.start()
    assert dcmtk("echoscu", "-aec", "AI_NODE", "127.0.0.1", str(node.port)).returncode == 0
    assert node.stop() == 0
    server.shutdown()

    in_file = (tmp_path / "trail" / "audit.xml").read_bytes().splitlines()
    assert len(server.frames) == len(in_file) >= 4
    for frame, line in zip(server.frames, in_file, strict=True):
        header, _, message = frame.partition(b"\xef\xbb\xbf")
        fields = header.decode().split(" ")
        pri_version, _time, _host, app, _pid, message_id, data = fields[:7]
        assert [pri_version, app, message_id, data] == ["<85>1", "dicom-node", "IHE+RFC-3881", "-"]
        assert message == line
        valid(message)


def test_a_message_recorded_soon_is_on_disk_when_its_wait_returns(tmp_path, monkeypatch):
    """`record_soon` writes at once and syncs in the background: its wait returns only after
    an fdatasync that began once the message was written (one sync may cover several)."""
    from dicom_node.audit import trail

    synced_sizes: list[int] = []  # the file's size as each sync began, in order
    real_sync = trail.os.fdatasync

    def fdatasync(fd: int) -> None:
        size = trail.os.fstat(fd).st_size
        real_sync(fd)
        synced_sizes.append(size)

    monkeypatch.setattr(trail.os, "fdatasync", fdatasync)
    source = messages.AuditSource("AI_NODE", "host", 1)
    audit = trail.AuditTrail(tmp_path / "audit.xml", source, None)
    returned: dict[str, int] = {}  # caller: syncs done when its wait returned

    def one(caller: str) -> None:
        peer = messages.Participant(caller, True, None, "127.0.0.1")
        wait = audit.record_soon(messages.association(peer, accepted=True))
        wait()
        returned[caller] = len(synced_sizes)

    callers = [f"CALLER{number:02d}" for number in range(20)]
    threads = [threading.Thread(target=one, args=(caller,)) for caller in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    audit.close()
    content = (tmp_path / "audit.xml").read_bytes()
    assert len(audit_messages(tmp_path / "audit.xml")) == 20
    for caller in callers:
        end = content.index(b"\n", content.index(caller.encode())) + 1
        assert any(size >= end for size in synced_sizes[: returned[caller]]), caller
    assert 1 <= len(synced_sizes) <= 20


def test_an_unhurried_message_shares_the_next_awaited_sync(tmp_path, monkeypatch):
    """`record_unhurried` (an association's message, after its answer left) is synced with the
    next message somebody waits for: a C-FIND's answer waits for one fdatasync, not two in a
    row; alone, it is synced all the same."""
    from dicom_node.audit import trail

    synced_sizes: list[int] = []  # the file's size as each sync began
    real_sync = trail.os.fdatasync

    def fdatasync(fd: int) -> None:
        synced_sizes.append(trail.os.fstat(fd).st_size)
        real_sync(fd)

    monkeypatch.setattr(trail.os, "fdatasync", fdatasync)
    monkeypatch.setattr(trail, "UNHURRIED_SECONDS", 3600)  # only the awaited one syncs it
    audit = trail.AuditTrail(tmp_path / "audit.xml", messages.AuditSource("AI_NODE", "h", 1), None)
    peer = messages.Participant("FINDSCU", True, None, "127.0.0.1")
    audit.record_unhurried(messages.association(peer, accepted=True))
    audit.record_soon(messages.association(peer, accepted=True))()
    assert synced_sizes == [(tmp_path / "audit.xml").stat().st_size]

    monkeypatch.setattr(trail, "UNHURRIED_SECONDS", 0.01)
    audit.record_unhurried(messages.association(peer, accepted=False, reason="test"))
    deadline = time.monotonic() + 30
    while len(synced_sizes) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert synced_sizes[1:] == [(tmp_path / "audit.xml").stat().st_size]
    audit.close()
