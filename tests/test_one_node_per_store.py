"""A second `serve` on a storage area a live node holds stops at once, says who holds it, and
touches nothing: the live node's metrics, files and index stay as they are."""

from __future__ import annotations

import signal
import subprocess
import sys

import yaml

from .conftest import free_port
from .test_durability import send_new_study
from .test_store import stored_rows


def test_a_second_node_on_the_same_storage_is_refused_and_touches_nothing(make_node, tmp_path):
    node = make_node(dicom={"workers": 2})
    node.start()
    send_new_study(node, tmp_path / "study")
    metrics_before = sorted(p.name for p in (node.storage / "metrics").iterdir())
    rows_before = stored_rows(node)

    # The same configuration, other ports (so only the storage area is shared).
    second = dict(node.settings)
    second["dicom"] = {**node.settings["dicom"], "port": free_port()}
    second["http"] = {**node.settings["http"], "port": free_port()}
    config = tmp_path / "second.yaml"
    config.write_text(yaml.safe_dump(second))
    result = subprocess.run(
        [sys.executable, "-m", "dicom_node", "--config", str(config), "serve"],
        capture_output=True,
        text=True,
        timeout=120,
    )
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
