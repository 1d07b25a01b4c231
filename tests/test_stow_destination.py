"""Results delivered to a DICOMweb server with STOW-RS (`peers.NAME.dicomweb_url`), against
Orthanc's DICOMweb plugin: stored as the node keeps them, retried while the server is down, and
still delivered after the node was killed meanwhile; a reload closes the connections it replaces."""

from __future__ import annotations

import io
import signal
import time

import pydicom
import pytest

from dicom_node.config import ConfigError, parse_config
from dicom_node.index.database import open_engine
from dicom_node.outbox.queue import open_outbox
from dicom_node.outbox.sender import OutboxSender

from .conftest import CR_CHEST, TRANSFER_SYNTAXES, dcmsend
from .orthanc import OrthancPeer
from .test_durability import wait_until
from .test_research_forwarding import job_rows, outbox_rows
from .test_results_delivery import node_status, stored_results


@pytest.fixture
def orthanc(tmp_path):
    peer = OrthancPeer(tmp_path / "orthanc", dicomweb=True)
    yield peer
    peer.stop()


def test_results_reach_a_dicomweb_archive_after_its_outage_and_a_node_crash(
    make_node, orthanc, copy_files
):
    node = make_node(
        peers={"archive": {"dicomweb_url": orthanc.dicomweb_url, "timeout_seconds": 5}},
        results={"destinations": ["archive"]},
        study={"stable_seconds": 1, "check_interval_seconds": 0.2},
        outbox={"first_retry_seconds": 0.3, "max_retry_seconds": 1},
    )
    node.start()
    folder = copy_files(CR_CHEST.parent, [CR_CHEST.name])
    assert dcmsend(node.port, folder).returncode == 0
    wait_until(lambda: [state for _, state in job_rows(node)] == ["done"], timeout=120)
    # Orthanc is not running yet: both results wait, with the reason.
    status = wait_until(lambda: (s := node_status(node))["not_delivered"][1:] and s, timeout=30)
    assert status["deliveries"] == {"archive": {"pending": 2}}
    assert all("DICOMweb server unreachable" in r["last_error"] for r in status["not_delivered"])

    node.stop(signal.SIGKILL)
    orthanc.start()
    node.start()
    wait_until(lambda: [state for state, _, _ in outbox_rows(node)] == ["sent"] * 2, timeout=60)
    cr = pydicom.dcmread(CR_CHEST, stop_before_pixels=True)
    in_archive = orthanc.instances_of_study(cr.StudyInstanceUID)
    assert sorted(i["Modality"] for i in in_archive) == ["SEG", "SR"]
    for kept in stored_results(node, cr.StudyInstanceUID).values():
        archived = pydicom.dcmread(io.BytesIO(orthanc.file(kept.SOPInstanceUID)))
        assert archived.PatientID == cr.PatientID
        assert archived.StudyInstanceUID == cr.StudyInstanceUID
        assert archived.SeriesInstanceUID == kept.SeriesInstanceUID


def test_a_peer_needs_a_dicom_address_or_a_dicomweb_url():
    with pytest.raises(ConfigError, match="peers.archive.*dicomweb_url"):
        parse_config({"peers": {"archive": {"timeout_seconds": 5}}})
    with pytest.raises(ConfigError, match="ae_title, host and port go together"):
        parse_config({"peers": {"archive": {"ae_title": "PACS", "host": "pacs"}}})
    config = parse_config({"peers": {"archive": {"dicomweb_url": "http://pacs/dicom-web"}}})
    with pytest.raises(ConfigError, match="has no DICOM address"):
        config.dicom_peer("archive")


def test_a_reload_closes_the_stow_rs_connections_it_replaces(orthanc, tmp_path):
    orthanc.start()
    settings = {
        "storage": {"path": str(tmp_path / "storage")},
        "peers": {"archive": {"dicomweb_url": orthanc.dicomweb_url, "timeout_seconds": 5}},
    }
    config = parse_config(settings)
    config.storage.path.mkdir()
    box = open_outbox(config, open_engine(config.storage.database_url))
    box.recover()
    instance = (TRANSFER_SYNTAXES / "CT_small.dcm").read_bytes()
    sender = OutboxSender(config, box)
    box.enqueue("archive", "1.2.3.1", [instance], None)
    assert sender.run_once(time.time()) == 1
    # Held here as a traceback or a debugger would hold it: only an explicit close ends its
    # kept-alive connection (dropped and freed, urllib3's finalizer would close it).
    replaced = sender._destinations["archive"]
    connections = replaced.session.get_adapter(orthanc.dicomweb_url).poolmanager.pools
    assert len(connections) == 1
    sender.reconfigure(parse_config(settings))
    box.enqueue("archive", "1.2.3.2", [instance], None)
    assert sender.run_once(time.time()) == 1  # on the reloaded configuration
    assert len(connections) == 0
    assert sender._destinations["archive"] is not replaced
