"""`/healthz` and `/metrics` as a monitoring system scrapes them, with one and two receivers."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from pydicom import dcmread

from dicom_node.config import parse_config
from dicom_node.index.database import open_engine
from dicom_node.serve.http_app import HttpServer, create_app, open_http_socket
from dicom_node.serve.metrics_folder import use_temporary_metrics_folder
from dicom_node.store.storage import StorageArea

from .conftest import MALFORMED, free_port, wait_for_port
from .test_durability import storescu, write_study
from .test_store import send_raw


def get(node, path: str) -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{node.http_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_count_what_was_received_and_refused(make_node, tmp_path, workers):
    node = make_node(dicom={"workers": workers})
    node.start()
    status, _, body = get(node, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"

    write_study(tmp_path / "study", 5)
    for _ in range(2):  # two associations: with two receivers, likely one on each
        assert storescu(node.port, tmp_path / "study").returncode == 0
    bad = MALFORMED / "MR_truncated.dcm"
    meta = dcmread(bad, stop_before_pixels=True, force=True).file_meta
    send_raw(node.port, meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID, bad)

    status, content_type, body = get(node, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    values = samples(body)
    sizes = sum(path.stat().st_size for path in node.storage.glob("??/??/*.dcm"))
    assert values[("dicom_node_instances_received_total", ())] == 5
    assert values[("dicom_node_bytes_received_total", ())] == sizes
    assert values[("dicom_node_duplicates_total", (("policy", "keep_first"),))] == 5
    assert values[("dicom_node_store_latency_seconds_count", ())] == 10  # every success
    assert values[("dicom_node_failures_total", (("reason", "malformed_dataset"),))] == 1
    assert values[("dicom_node_open_associations", ())] == 0


def test_healthz_fails_when_storage_cannot_be_written(node):
    with node.storage_unwritable():
        status, _, body = get(node, "/healthz")
        assert status == 503
        answer = json.loads(body)
        assert answer["status"] == "failing"
        assert any(problem.startswith("storage: ") for problem in answer["problems"])
    assert get(node, "/healthz")[0] == 200


def test_a_taken_http_port_stops_the_node_at_start(make_node):
    """uvicorn binds in its own thread: a taken port ended that thread and the node ran on
    without HTTP, answering a monitor's /status on the DICOM port it shared (an A-ABORT)."""
    node = make_node()
    node.settings["http"]["port"] = node.port  # the node's own DICOM port
    with contextlib.suppress(RuntimeError):  # it may exit before its DICOM port answers
        node.start()
    assert node.process is not None and node.process.wait(timeout=60) != 0
    assert f"http.port: cannot listen on 127.0.0.1:{node.port}: Address already in use" in (
        node.log()
    )


def test_healthz_fails_when_the_dicom_listener_stopped(tmp_path):
    """The HTTP app asks the receiver whether its listener runs; a stopped one is a 503."""
    config = parse_config({"storage": {"path": str(tmp_path)}, "http": {"port": free_port()}})
    engine = open_engine(config.storage.database_url)
    listening = {"now": True}
    app = create_app(
        engine,
        StorageArea(tmp_path),
        "AI_NODE",
        config.http,
        None,
        dicom_listening=lambda: listening["now"],
    )
    server = HttpServer(app, config.http, open_http_socket(config.http))
    server.start()
    try:
        wait_for_port(config.http.port)
        url = f"http://127.0.0.1:{config.http.port}/healthz"
        assert requests.get(url, timeout=10).status_code == 200
        listening["now"] = False
        answer = requests.get(url, timeout=10)
        assert answer.status_code == 503
        assert "dicom: the listener has stopped accepting associations" in answer.json()["problems"]
    finally:
        server.stop()


def test_a_temporary_metrics_folder_goes_when_its_process_ends():
    """A cluster's node and each worker keep their metrics in a folder of their own under
    /tmp: one was left behind at every start. It is removed when the process that made it
    ends normally, and not when a process forked from it (a worker's pool) ends first."""
    script = (
        "import os, sys\n"
        "from dicom_node.serve.metrics_folder import use_temporary_metrics_folder\n"
        "folder = use_temporary_metrics_folder('dicom-node-test-')\n"
        "print(folder, flush=True)\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    sys.exit(0)\n"
        "os.waitpid(child, 0)\n"
        "print(folder.is_dir(), os.environ['PROMETHEUS_MULTIPROC_DIR'] == str(folder))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    folder, kept = done.stdout.splitlines()
    assert Path(folder).name.startswith("dicom-node-test-")
    assert kept == "True True"  # still there after the forked child ended
    assert not Path(folder).exists()  # gone with the process that made it


def test_a_killed_process_metrics_folder_goes_at_the_next_start(tmp_path, monkeypatch):
    """A node killed with SIGKILL cannot remove its folder; the next start of a node or worker
    with the same prefix removes the folders of processes that are gone, and only those."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "before"))
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    host, pid = socket.gethostname(), gone.stdout.strip()
    dead = tmp_path / f"dicom-node-{host}-{pid}-abc"
    living = tmp_path / f"dicom-node-{host}-{os.getpid()}-def"
    worker = tmp_path / f"dicom-node-worker-{host}-{pid}-ghi"  # another prefix
    elsewhere = tmp_path / f"dicom-node-another-host-{pid}-jkl"  # a container sharing /tmp
    unnamed = tmp_path / "dicom-node-xyz12345"  # made before folders were named by process
    for folder in (dead, living, worker, elsewhere, unnamed):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"x")
    made = use_temporary_metrics_folder("dicom-node-")
    assert made.parent == tmp_path and made.name.startswith(f"dicom-node-{host}-{os.getpid()}-")
    assert not dead.exists()
    assert all(folder.exists() for folder in (living, worker, elsewhere, unnamed))
