"""The configuration reloaded without a restart (SIGHUP to `dicom-node serve`): a new peer is
accepted by every receiving process while an association stays open across the reload; a new
route and destination take the next study to a real peer (DCMTK's storescp); a broken file is
refused with `check-config`'s message and the running configuration keeps working."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import yaml
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from dicom_node.index.schema import JOB_DONE, JOB_RUNNING, OUTBOX_SENT, jobs

from .conftest import CR_CHEST, CT_SERIES, dcmsend
from .test_durability import wait_until
from .test_research_forwarding import outbox_rows
from .test_results_delivery import job_states

# What a reload changes does not depend on the index's database: SQLite alone.
pytestmark = pytest.mark.parametrize("database_kind", ["sqlite"])

KNOWN = {"ae_title": "KNOWN", "host": "127.0.0.1", "port": 104}
NEWCOMER = {"ae_title": "NEWCOMER", "host": "127.0.0.1", "port": 105}


def associate(port: int, calling: str):
    ae = AE(calling)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title="AI_NODE")


def reload(node, settings: dict | str) -> None:
    """Write the node's file anew and send SIGHUP to its main process."""
    text = settings if isinstance(settings, str) else yaml.safe_dump(settings)
    node.config_path.write_text(text)
    assert node.process is not None
    os.kill(node.process.pid, signal.SIGHUP)


def test_a_new_peer_is_accepted_by_every_receiver_while_an_association_stays_open(make_node):
    node = make_node(dicom={"workers": 2, "require_known_calling_ae": True}, peers={"known": KNOWN})
    node.start()
    port = node.port
    held = associate(port, "KNOWN")
    assert held.is_established
    refused = associate(port, "NEWCOMER")
    assert refused.is_rejected

    node.settings["peers"]["newcomer"] = NEWCOMER
    reload(node, {**node.settings, "dicom": {**node.settings["dicom"], "port": port + 1}})
    wait_until(lambda: "receiving process 1: reloaded configuration applied" in node.log())
    assert "changed peers.newcomer" in node.log()
    assert "needs a restart (running value kept): dicom.port" in node.log()

    assert held.send_c_echo().Status == 0  # the open association went through the reload
    held.release()
    # Associations held at the same time spread over both receiving processes: each accepts.
    newcomers = [associate(port, "NEWCOMER") for _ in range(4)]
    assert all(association.is_established for association in newcomers)
    for association in newcomers:
        assert association.send_c_echo().Status == 0
        association.release()
    assert node.process is not None and node.process.poll() is None


def test_a_broken_file_is_refused_with_check_configs_message_and_the_node_keeps_going(
    make_node,
):
    node = make_node(dicom={"require_known_calling_ae": True}, peers={"known": KNOWN})
    node.start()
    port = node.port
    broken = dict(node.settings, results={"destinations": ["nowhere"]})
    reload(node, broken)
    check = subprocess.run(
        [sys.executable, "-m", "dicom_node", "check-config", str(node.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 3
    message = check.stderr.strip()
    assert message.startswith("configuration error: ") and "unknown peers: nowhere" in message
    wait_until(lambda: "reload refused" in node.log())
    assert f"the running configuration stays: {message}" in node.log()

    reload(node, "peers: [unclosed")
    wait_until(lambda: "not valid YAML" in node.log())
    association = associate(port, "KNOWN")
    assert association.is_established and association.send_c_echo().Status == 0
    association.release()
    assert node.process is not None and node.process.poll() is None


def test_a_new_route_sends_the_next_study_to_a_new_destination_while_a_job_runs(
    make_node,
    tmp_path,
    research_peer,
):
    port, received, start_peer = research_peer
    start_peer()
    radiograph_route = {"name": "cr", "models": ["cxr_pneumonia"], "modality": ["CR"]}
    node = make_node(
        study={"stable_seconds": 1, "check_interval_seconds": 0.2},
        inference={"routes": [radiograph_route]},
    )
    node.start()
    radiograph = tmp_path / "radiograph"
    radiograph.mkdir()
    (radiograph / "cr.dcm").write_bytes(CR_CHEST.read_bytes())
    assert dcmsend(node.port, radiograph).returncode == 0
    wait_until(lambda: job_states(node) == [JOB_RUNNING], timeout=60)

    # Reloaded while the classifier runs: a research peer and a route for CT series to it.
    node.settings["peers"] = {
        "research": {"ae_title": "RESEARCH", "host": "127.0.0.1", "port": port}
    }
    route = {"name": "ct-research", "modality": ["CT"], "research_destinations": ["research"]}
    node.settings["inference"]["routes"] = [radiograph_route, route]
    reload(node, node.settings)
    wait_until(lambda: "changed inference.routes, peers.research" in node.log())

    study = tmp_path / "study"
    study.mkdir()
    for source in sorted(CT_SERIES.glob("*.dcm"))[:2]:
        (study / source.name).write_bytes(source.read_bytes())
    assert dcmsend(node.port, study).returncode == 0
    wait_until(lambda: [s for s, _, _ in outbox_rows(node)] == [OUTBOX_SENT] * 2, timeout=120)
    assert len(list(received.iterdir())) == 2
    # The job that ran across the reload ended in its first attempt, with its results.
    wait_until(lambda: job_states(node) == [JOB_DONE, JOB_DONE], timeout=120)
    log = node.log()
    assert log.index("configuration reloaded") < log.index("job 1 done")
    with node.engine().connect() as connection:
        attempts = connection.execute(select(jobs.c.attempts).order_by(jobs.c.id)).scalars()
        assert list(attempts) == [1, 1]
