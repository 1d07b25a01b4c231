"""A second `serve` on a storage area a live node holds stops at once, says who holds it, and
touches nothing: the live node's metrics, files and index stay as they are. Where only the
receiving processes of a node whose main process died still hold it (finishing their
associations), a new node waits for them instead of recovering the files they still write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import yaml

from dicom_node.store.lock import LOCK_NAME, StorageLock, StorageLocked, take_lock

from .conftest import free_port, receiving_processes
from .test_durability import send_new_study, wait_until
from .test_store import stored_rows


def serve_beside(node, tmp_path, **changes) -> subprocess.CompletedProcess:
    """`serve` with ``node``'s configuration (``changes`` replacing sections) on other ports,
    so that only the storage area is shared; run until it exits."""
    second = {
        **node.settings,
        "dicom": {**node.settings["dicom"], "port": free_port()},
        "http": {**node.settings["http"], "port": free_port()},
        **changes,
    }
    config = tmp_path / "second.yaml"
    config.write_text(yaml.safe_dump(second))
    return subprocess.run(
        [sys.executable, "-m", "dicom_node", "--config", str(config), "serve"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_second_node_on_the_same_storage_is_refused_and_touches_nothing(make_node, tmp_path):
    node = make_node(dicom={"workers": 2})
    node.start()
    send_new_study(node, tmp_path / "study")
    metrics_before = sorted(p.name for p in (node.storage / "metrics").iterdir())
    rows_before = stored_rows(node)

    result = serve_beside(node, tmp_path)
    assert result.returncode == 3  # a configuration error
    assert "is in use by another node" in result.stderr
    assert f"pid {node.process.pid}" in result.stderr
    # (the live node's processes may have added theirs meanwhile; none may be gone)
    assert set(metrics_before) <= {p.name for p in (node.storage / "metrics").iterdir()}
    assert stored_rows(node) == rows_before
    send_new_study(node, tmp_path / "after")  # the live node still serves

    # Once the first node is gone (however it died), the area is free again.
    node.stop(signal.SIGKILL)
    node.start()
    assert len(stored_rows(node)) == len(rows_before) + 2


def test_the_receiving_processes_hold_the_storage_lock(make_node):
    node = make_node(dicom={"workers": 3})
    node.start()
    lock_file = (node.storage / LOCK_NAME).resolve()

    def holding() -> list[int]:
        return [
            child
            for child in receiving_processes(node.process.pid)
            if any(
                os.path.realpath(f"/proc/{child}/fd/{fd}") == str(lock_file)
                for fd in os.listdir(f"/proc/{child}/fd")
            )
        ]

    # the two receiving processes beside the main one (started once its port listens)
    wait_until(lambda: len(holding()) == 2)


# A node's main process that dies (os._exit) while its receiving process (spawned, holding the
# lock's share) still finishes its work.
_DYING_NODE = """
import multiprocessing, os, sys, time
from pathlib import Path
from dicom_node.store.lock import StorageLock

def finish_associations(share, seconds):
    time.sleep(seconds)

if __name__ == "__main__":
    lock = StorageLock(Path(sys.argv[1]))
    child = multiprocessing.get_context("spawn").Process(
        target=finish_associations, args=(lock.share(), float(sys.argv[2]))
    )
    child.start()
    os._exit(0)
"""


def test_a_node_waits_for_the_receiving_processes_of_a_node_that_died(tmp_path):
    script = tmp_path / "dying_node.py"
    script.write_text(_DYING_NODE)
    storage = tmp_path / "storage"
    subprocess.run([sys.executable, str(script), str(storage), "4"], check=True, timeout=60)
    with pytest.raises(StorageLocked) as refused:
        StorageLock(storage)
    assert refused.value.main_process_gone()
    take_lock(storage, patience=60).release()  # once the receiving process is gone


def test_a_live_nodes_lock_is_refused_at_once(tmp_path):
    held = StorageLock(tmp_path)
    with pytest.raises(StorageLocked) as refused:
        take_lock(tmp_path, patience=60)
    assert not refused.value.main_process_gone()
    assert f"pid {os.getpid()}" in str(refused.value)
    held.release()
