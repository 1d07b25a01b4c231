"""DICOM over TLS (PS3.15 Annex B) against DCMTK's TLS options and Orthanc's DICOM TLS: trusted
clients are served; no certificate, an untrusted or expired one, plain DICOM on the TLS port and
TLS 1.0/1.1 are refused, each with a log line naming the address and the reason."""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
import sys
import time
from types import SimpleNamespace

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicom_node.config import ConfigError, parse_config
from dicom_node.dimse.scu import PeerUnavailable, echo
from dicom_node.index.database import open_engine
from dicom_node.index.schema import OUTBOX_SENT
from dicom_node.outbox.queue import open_outbox
from dicom_node.outbox.sender import OutboxSender

from .certificates import Authority, Issued
from .conftest import TRANSFER_SYNTAXES, dcmtk, free_port
from .orthanc import OrthancPeer

CT_SMALL = TRANSFER_SYNTAXES / "CT_small.dcm"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("pki")
    trusted = Authority(folder, "trusted-ca")
    stranger = Authority(folder, "other-ca")
    return SimpleNamespace(
        ca=trusted.certificate,
        node=trusted.issue("ai-node"),
        modality=trusted.issue("modality"),
        untrusted=stranger.issue("stranger"),
        expired=trusted.issue("expired", expired=True),
        orthanc=trusted.issue("orthanc"),
    )


def tls_settings(pki, **extra) -> dict:
    return {
        "port": free_port(),
        "certificate_file": str(pki.node.certificate),
        "key_file": str(pki.node.key),
        "ca_file": str(pki.ca),
        **extra,
    }


def over_tls(tool: str, node, client: Issued | None, pki, *args: str, calling: str = "SCU"):
    """A DCMTK tool on the node's TLS port, presenting `client` (None: anonymous TLS)."""
    identity = client.tls_args if client is not None else ["+tla"]
    port = str(node.settings["dicom"]["tls"]["port"])
    return dcmtk(
        tool, *identity, "+cf", str(pki.ca), "-aet", calling, "-aec", "AI_NODE", *args,
        "127.0.0.1", port,
    )  # fmt: skip


def wait_for_log(node, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in node.log():
            return node.log()
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the node's log:\n{node.log()[-3000:]}")


def move_over_tls(port: int, client: Issued, pki, destination: str) -> int:
    """C-MOVE CT_SMALL's study to `destination` (pynetdicom: DCMTK's movescu has no TLS);
    the sub-operations completed."""
    context = ssl.create_default_context(cafile=pki.ca)
    context.load_cert_chain(client.certificate, client.key)
    ae = AE("MOVESCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    association = ae.associate(
        "127.0.0.1", port, ae_title="AI_NODE", tls_args=(context, "localhost")
    )
    assert association.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = pydicom.dcmread(CT_SMALL).StudyInstanceUID
    *_, (status, _) = association.send_c_move(
        query, destination, StudyRootQueryRetrieveInformationModelMove
    )
    association.release()
    assert status.Status == 0x0000
    return int(status.NumberOfCompletedSuboperations)


def get_over_tls(port: int, client: Issued, pki) -> list[Dataset]:
    """C-GET CT_SMALL's study over TLS (pynetdicom: Debian's getscu has no TLS options); the
    instances received on the same association."""
    context = ssl.create_default_context(cafile=pki.ca)
    context.load_cert_chain(client.certificate, client.key)
    received: list[Dataset] = []

    def on_store(event) -> int:
        received.append(event.dataset)
        return 0x0000

    ae = AE("GETSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    role = build_role(CTImageStorage, scp_role=True)
    association = ae.associate(
        "127.0.0.1",
        port,
        ae_title="AI_NODE",
        tls_args=(context, "localhost"),
        ext_neg=[role],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert association.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = pydicom.dcmread(CT_SMALL).StudyInstanceUID
    *_, (status, _) = association.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
    association.release()
    assert status.Status == 0x0000
    return received


def node_command(node, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dicom_node", "--config", str(node.config_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_trusted_client_is_served_over_tls_with_plain_dicom_off(make_node, pki, tmp_path):
    tls = tls_settings(pki)
    self_peer = {"ae_title": "AI_NODE", "host": "127.0.0.1", "port": tls["port"], "tls": True}
    node = make_node(
        dicom={"port": None, "tls": tls},
        peers={"itself": {**self_peer, "ca_file": str(pki.ca)}},
    )
    node.start()
    echo = over_tls("echoscu", node, pki.modality, pki)
    assert echo.returncode == 0, echo.stderr
    store = dcmtk(*["storescu", *pki.modality.tls_args, "+cf", str(pki.ca), "-aec", "AI_NODE"],
                  "127.0.0.1", str(tls["port"]), str(CT_SMALL))  # fmt: skip
    assert store.returncode == 0, store.stderr
    find = over_tls("findscu", node, pki.modality, pki, "-S", "-k", "QueryRetrieveLevel=STUDY",
                    "-k", "StudyInstanceUID")  # fmt: skip
    assert find.returncode == 0 and "StudyInstanceUID" in find.stderr, find.stderr
    log = wait_for_log(node, "client certificate CN=modality,O=Test Hospital")
    assert "TLSv1.3" in log or "TLSv1.2" in log
    # The SCU side, to the node itself over TLS with the node's certificate as client's:
    # `echo`, `send` and the sub-operations of a C-MOVE.
    assert node_command(node, "echo", "itself").returncode == 0
    sent = node_command(node, "send", "itself", str(CT_SMALL))
    assert sent.returncode == 0 and "sent 1 instance(s)" in sent.stdout, sent.stderr
    assert move_over_tls(tls["port"], pki.modality, pki, "AI_NODE") == 1  # movescu has no TLS
    (got,) = get_over_tls(tls["port"], pki.modality, pki)  # nor has getscu
    assert got.SOPInstanceUID == pydicom.dcmread(CT_SMALL).SOPInstanceUID
    wait_for_log(node, "client certificate CN=ai-node,O=Test Hospital")
    # Plain DICOM is off: nothing listens on the default port's place.
    assert "plain port off" in node.log()


def test_each_refusal_is_logged_with_the_address_and_the_reason(make_node, pki):
    node = make_node(dicom={"tls": tls_settings(pki), "acse_timeout": 3})
    node.start()
    tls_port = node.settings["dicom"]["tls"]["port"]
    silent = socket.create_connection(("127.0.0.1", tls_port))  # says nothing
    started = time.monotonic()
    served = over_tls("echoscu", node, pki.modality, pki)
    assert served.returncode == 0, served.stderr
    assert time.monotonic() - started < 2.5, "a silent client does not hold the listener"
    cases = [
        (over_tls("echoscu", node, None, pki), "no client certificate"),
        (over_tls("echoscu", node, pki.untrusted, pki), "client certificate not accepted: "),
        (over_tls("echoscu", node, pki.expired, pki), "certificate has expired"),
        (dcmtk("echoscu", "-aec", "AI_NODE", "127.0.0.1", str(tls_port)), "not TLS"),
    ]
    for version in ("-tls1", "-tls1_1"):
        old = subprocess.run(
            ["openssl", "s_client", version, "-cipher", "DEFAULT@SECLEVEL=0",
             "-connect", f"127.0.0.1:{tls_port}"],
            input="", capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        cases.append((old, "TLS version not accepted"))
    for result, reason in cases:
        assert result.returncode != 0, (reason, result.stdout)
        wait_for_log(node, reason)
    log = wait_for_log(node, "no TLS handshake within the ACSE timeout")
    silent.close()
    refusals = [line for line in log.splitlines() if "TLS connection from 127.0.0.1:" in line]
    assert len([line for line in refusals if "refused" in line]) == len(cases) + 1, refusals
    # Plain DICOM still answers beside TLS.
    assert dcmtk("echoscu", "-aec", "AI_NODE", "127.0.0.1", str(node.port)).returncode == 0


def test_a_pinned_peer_is_accepted_only_over_tls_with_its_certificate(make_node, pki):
    fingerprint = hashlib.sha256(pki.modality.der).hexdigest().upper()
    node = make_node(
        dicom={"tls": tls_settings(pki)},
        peers={
            "modality": {
                "ae_title": "MODALITY",
                "host": "127.0.0.1",
                "port": 104,
                "certificate_fingerprint": ":".join(
                    fingerprint[i : i + 2] for i in range(0, 64, 2)
                ),
            },
            "router": {
                "ae_title": "ROUTER",
                "host": "127.0.0.1",
                "port": 105,
                "certificate_subject": "CN=ai-node,O=Test Hospital",
            },
        },
    )
    node.start()
    accepted = over_tls("echoscu", node, pki.modality, pki, calling="MODALITY")
    assert accepted.returncode == 0, accepted.stderr
    assert over_tls("echoscu", node, pki.node, pki, calling="ROUTER").returncode == 0
    assert over_tls("echoscu", node, pki.node, pki, calling="MODALITY").returncode != 0
    wait_for_log(node, "the client certificate is not peers.modality.certificate_fingerprint")
    assert over_tls("echoscu", node, pki.modality, pki, calling="ROUTER").returncode != 0
    wait_for_log(node, "subject 'CN=modality,O=Test Hospital' is not 'CN=ai-node,O=Test Hospital'")
    plain = dcmtk("echoscu", "-aet", "MODALITY", "-aec", "AI_NODE", "127.0.0.1", str(node.port))
    assert plain.returncode != 0
    log = wait_for_log(node, "peers.modality is accepted over TLS only")
    assert "from 127.0.0.1:" in log.split("peers.modality is accepted over TLS only")[0][-200:]


def test_the_outbox_delivers_to_orthanc_over_dicom_tls(tmp_path, pki):
    orthanc = OrthancPeer(
        tmp_path / "orthanc",
        settings={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(pki.orthanc.certificate),
            "DicomTlsPrivateKey": str(pki.orthanc.key),
            "DicomTlsTrustedCertificates": str(pki.ca),
            "DicomTlsRemoteCertificateRequired": True,
        },
    )
    orthanc.start()
    try:
        tls_peer = {**orthanc.peer, "tls": True, "ca_file": str(pki.ca)}
        config = parse_config(
            {
                "storage": {"path": str(tmp_path / "storage")},
                "dicom": {"tls": {"certificate_file": str(pki.node.certificate),
                                  "key_file": str(pki.node.key)}},
                "peers": {"pacs": tls_peer},
            }
        )  # fmt: skip
        config.storage.path.mkdir()
        box = open_outbox(config, open_engine(config.storage.database_url))
        box.recover()
        assert box.enqueue("pacs", "1.2.3", [CT_SMALL.read_bytes()], None)
        assert OutboxSender(config, box).run_once(time.time()) == 1
        (row,) = box.rows()
        assert row.state == OUTBOX_SENT, row.last_error
        assert orthanc.instances_of_study("1.3.6.1.4.1.5962.1.2.1.20040119072730.12322")
        # Without the node's certificate, Orthanc refuses the connection.
        no_certificate = config.model_copy(update={"dicom": config.dicom.model_copy(
            update={"tls": config.dicom.tls.model_copy(
                update={"certificate_file": None, "key_file": None})})})  # fmt: skip
        with pytest.raises(PeerUnavailable, match="TLS handshake"):
            echo(no_certificate, "pacs")
    finally:
        orthanc.stop()


_CERT = {"certificate_file": "node.crt", "key_file": "node.key"}


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"dicom": {"tls": {"port": 2762}}}, "dicom.tls: Value error, a TLS port needs"),
        ({"dicom": {"tls": {"port": 2762, **_CERT}}}, "require_client_certificate needs ca_file"),
        ({"dicom": {"tls": {"ciphers": "NOTHING-KNOWN"}}}, "dicom.tls.ciphers: Value error"),
        ({"dicom": {"port": None}}, "port and tls.port are both null"),
        (
            {"peers": {"p": {"ae_title": "P", "host": "h", "port": 1, "ca_file": "ca.crt"}}},
            "ca_file is for a TLS peer",
        ),
        (
            {"peers": {"p": {"ae_title": "P", "host": "h", "port": 1, "certificate_subject": "x"}}},
            "peers.p: a certificate_fingerprint or certificate_subject needs dicom.tls.port",
        ),
        (
            {
                "peers": {
                    "p": {"ae_title": "P", "host": "h", "port": 1, "certificate_fingerprint": "ab"}
                }
            },
            "not a SHA-256 fingerprint",
        ),
    ],
)
def test_tls_settings_that_cannot_work_are_refused_naming_the_key(settings, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(settings)
