"""The outbox's retry policy against peers that are down or refuse what they are sent."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage

from dicom_node.config import parse_config
from dicom_node.index.database import open_engine
from dicom_node.index.schema import OUTBOX_FAILED, OUTBOX_PENDING, OUTBOX_SENT
from dicom_node.outbox.queue import open_outbox, retry_delay
from dicom_node.outbox.sender import OutboxSender

from .conftest import TRANSFER_SYNTAXES, free_port

CT_SMALL = TRANSFER_SYNTAXES / "CT_small.dcm"


def make_outbox(tmp_path, port: int):
    config = parse_config(
        {
            "storage": {"path": str(tmp_path / "storage")},
            "peers": {"archive": {"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": port}},
            "outbox": {"first_retry_seconds": 2, "max_retry_seconds": 10, "max_refusals": 3},
        }
    )
    config.storage.path.mkdir()
    box = open_outbox(config, open_engine(config.storage.database_url))
    box.recover()
    assert box.enqueue("archive", "1.2.3", [CT_SMALL.read_bytes()], None)
    assert not box.enqueue("archive", "1.2.3", [CT_SMALL.read_bytes()], None), "queued once"
    return config, box


@pytest.fixture
def peer():
    """A pynetdicom storage SCP answering every C-STORE with the status in `answer`."""
    answer = {"status": 0x0000}
    ae = AE("ARCHIVE")
    ae.add_supported_context(CTImageStorage)
    port = free_port()
    handlers = [(evt.EVT_C_STORE, lambda event: answer["status"])]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    yield port, answer
    server.shutdown()


def test_a_peer_that_is_down_is_retried_with_growing_delays_and_never_given_up(tmp_path):
    config, box = make_outbox(tmp_path, free_port())
    sender = OutboxSender(config, box)
    now = time.time()
    for attempt in range(1, 7):
        assert sender.run_once(now) == 0
        (row,) = box.rows()
        assert (row.state, row.attempts) == (OUTBOX_PENDING, attempt)
        assert row.next_attempt_at == now + retry_delay(config.outbox, attempt)
        assert "cannot reach peer 'archive'" in row.last_error
        assert sender.run_once(row.next_attempt_at - 0.1) == 0, "not due yet"
        now = row.next_attempt_at
    assert retry_delay(config.outbox, 6) == 10, "capped"
    assert box.area.path(row.path).exists()


def test_refusals_end_in_failed_until_retried_then_delivery_removes_the_file(tmp_path, peer):
    port, answer = peer
    config, box = make_outbox(tmp_path, port)
    sender = OutboxSender(config, box)
    answer["status"] = 0xA700  # out of resources
    now = time.time()
    for _ in range(3):
        sender.run_once(now)
        now += 60
    (row,) = box.rows()
    assert row.state == OUTBOX_FAILED and "status 0xA700" in row.last_error
    assert sender.run_once(now + 3600) == 0, "failed rows are not sent"
    answer["status"] = 0x0000
    assert box.retry() == 1
    assert sender.run_once(now + 3600) == 1
    (row,) = box.rows()
    assert row.state == OUTBOX_SENT and not box.area.path(row.path).exists()


def test_a_local_error_is_retried_and_never_blamed_on_the_peer(tmp_path, peer):
    """Out of file descriptors (or a file this node cannot read) is the node's trouble: the
    object waits, however many times it happens, and goes once the node can read it again."""
    port, _ = peer
    config, box = make_outbox(tmp_path, port)
    sender = OutboxSender(config, box)
    (row,) = box.rows()
    stored = box.area.path(row.path)
    content = stored.read_bytes()
    stored.unlink()
    stored.symlink_to(tmp_path / "nowhere")  # opening it fails in the OS, as with EMFILE
    now = time.time()
    for _ in range(config.outbox.max_refusals + 2):
        assert sender.run_once(now) == 0
        now += 60
    (row,) = box.rows()
    assert row.state == OUTBOX_PENDING
    assert "local error, not the peer's answer" in row.last_error
    stored.unlink()
    stored.write_bytes(content)
    assert sender.run_once(now) == 1
    assert box.rows()[0].state == OUTBOX_SENT


def test_retry_makes_a_delivery_waiting_out_its_backoff_due_now(tmp_path):
    """The peer was down and is back: `dicom-node outbox retry` need not wait for the next try."""
    port = free_port()  # nothing listens there yet
    config, box = make_outbox(tmp_path, port)
    sender = OutboxSender(config, box)
    now = time.time()
    assert sender.run_once(now) == 0
    (row,) = box.rows()
    assert row.state == OUTBOX_PENDING and row.next_attempt_at > now
    settings = tmp_path / "node.yaml"
    settings.write_text(yaml.safe_dump(config.model_dump(mode="json", include={"storage"})))
    result = subprocess.run(
        [sys.executable, "-m", "dicom_node", "--config", str(settings), "outbox", "retry"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "1 object(s) not yet delivered: due now" in result.stdout
    (row,) = box.rows()
    assert (row.state, row.attempts) == (OUTBOX_PENDING, 0)
    retried_at = time.time()
    assert row.next_attempt_at <= retried_at
    ae = AE("ARCHIVE")
    ae.add_supported_context(CTImageStorage)
    handlers = [(evt.EVT_C_STORE, lambda event: 0x0000)]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    try:
        assert sender.run_once(retried_at) == 1
    finally:
        server.shutdown()
    assert box.rows()[0].state == OUTBOX_SENT
