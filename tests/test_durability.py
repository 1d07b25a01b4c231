"""Crashes and restarts: what was acknowledged survives, what was not leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select, update

from dicom_node.index.schema import (
    JOB_DONE,
    JOB_PENDING,
    JOB_RUNNING,
    STUDY_COMPLETE,
    jobs,
    studies,
)
from dicom_node.store import storage as storage_module
from dicom_node.store.storage import StorageArea

from .conftest import DCMTK, TOOL_ENV, TRANSFER_SYNTAXES, dcmtk, receiving_processes
from .test_store import stored_rows


def write_study(folder, count: int, study_uid: str | None = None) -> dict[str, str]:
    """`count` copies of a small CT with fresh instance UIDs; returns file name -> SOP UID."""
    folder.mkdir(parents=True, exist_ok=True)
    template = dcmread(TRANSFER_SYNTAXES / "CT_small.dcm")
    template.StudyInstanceUID = study_uid or generate_uid()
    template.SeriesInstanceUID = generate_uid()
    written = {}
    for number in range(count):
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.InstanceNumber = number + 1
        name = f"{number:04d}.dcm"
        template.save_as(folder / name)
        written[name] = str(template.SOPInstanceUID)
    return written


def storescu(port: int, folder) -> subprocess.CompletedProcess:
    return dcmtk("storescu", "-aec", "AI_NODE", "127.0.0.1", str(port), "+sd", str(folder))


def send_new_study(node, folder: Path) -> str:
    """Send a new two-instance study to `node`; returns its Study Instance UID."""
    study_uid = generate_uid()
    write_study(folder, 2, study_uid)
    assert storescu(node.port, folder).returncode == 0
    return study_uid


def test_sigkill_mid_transfer_keeps_every_acknowledged_instance(make_node, tmp_path):
    node = make_node()
    node.start()
    folder = tmp_path / "study"
    uids = write_study(folder, 300)
    # -v prints each file before sending it and each response after: the acknowledgements.
    sender = subprocess.Popen(
        [str(DCMTK / "storescu"), "-v", "-aec", "AI_NODE", "127.0.0.1", str(node.port)]
        + [str(folder / name) for name in sorted(uids)],
        env=TOOL_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    acknowledged, current = [], None
    for line in sender.stdout:
        if "Sending file:" in line:
            current = line.rsplit("/", 1)[-1].strip()
        elif "Received Store Response (Success)" in line:
            acknowledged.append(uids[current])
            if len(acknowledged) == 120:
                node.stop(signal.SIGKILL)
    sender.wait(timeout=60)
    assert len(acknowledged) >= 120 and len(acknowledged) < 300, "the node was not killed mid-way"

    node.start()
    rows = stored_rows(node)
    missing = [uid for uid in acknowledged if uid not in rows]
    assert not missing, f"{len(missing)} acknowledged instance(s) lost"
    expected = dcmread(folder / "0000.dcm").PixelData
    for row in rows.values():  # every indexed file is complete, acknowledged or not
        stored = node.storage / row["path"]
        assert stored.stat().st_size == row["size"]
        assert dcmread(stored).PixelData == expected
    assert len(list(node.storage.glob("??/??/*.dcm"))) == len(rows)
    # The sender can simply send everything again: duplicates are kept once.
    assert storescu(node.port, folder).returncode == 0
    assert len(stored_rows(node)) == 300


def test_restart_settles_what_a_power_cut_leaves(make_node, tmp_path):
    """A committed row whose file is short, and a file with no row, never were acknowledged."""
    node = make_node()
    node.start()
    uids = write_study(tmp_path / "study", 3)
    assert storescu(node.port, tmp_path / "study").returncode == 0
    rows = stored_rows(node)
    short_uid, kept_uid, _ = sorted(rows)
    # Metadata documents are written once the receiver is idle, and not flushed.
    cut_document = (node.storage / rows[kept_uid]["path"]).with_suffix(".json")
    wait_until(cut_document.exists)
    node.stop()
    short_file = node.storage / rows[short_uid]["path"]
    short_file.write_bytes(short_file.read_bytes()[:1000])
    orphan = node.storage / rows[kept_uid]["path"].replace(".dcm", "0.dcm")
    orphan.write_bytes(b"\0" * 500)
    cut_document.write_bytes(cut_document.read_bytes()[:10])  # cut short by the power cut

    node.start()
    after = stored_rows(node)
    assert sorted(after) == sorted(set(uids.values()) - {short_uid})
    assert not short_file.exists() and not orphan.exists()
    assert not cut_document.exists() and not short_file.with_suffix(".json").exists()
    log = node.log()
    assert "removed 1 index row(s) whose file was not complete" in log
    assert "removed 1 stored file(s) without an index row" in log


def wait_until(condition, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def study_state(node, study_uid: str) -> str | None:
    with node.engine().connect() as connection:
        return connection.execute(
            select(studies.c.state).where(studies.c.study_instance_uid == study_uid)
        ).scalar()


def study_jobs(node, study_uid: str) -> list[str]:
    with node.engine().connect() as connection:
        return list(
            connection.execute(
                select(jobs.c.state)
                .where(jobs.c.study_instance_uid == study_uid)
                .order_by(jobs.c.id)
            ).scalars()
        )


def test_stable_study_gets_a_durable_job_and_reopens_on_new_instances(make_node, tmp_path):
    node = make_node(study={"stable_seconds": 1.5, "check_interval_seconds": 0.2})
    node.start()
    study_uid = send_new_study(node, tmp_path / "first")
    assert study_state(node, study_uid) == "receiving"
    assert study_jobs(node, study_uid) == []
    wait_until(lambda: study_state(node, study_uid) == STUDY_COMPLETE)
    wait_until(lambda: study_jobs(node, study_uid) == [JOB_DONE])  # the runner took it

    # More instances reopen the study; quiet again, it gets a second job.
    write_study(tmp_path / "late", 1, study_uid)
    assert storescu(node.port, tmp_path / "late").returncode == 0
    wait_until(lambda: study_jobs(node, study_uid) == [JOB_DONE, JOB_DONE])
    completions = re.findall(
        r"study complete after 2 s without new instances: (.*); job (\d+) pending", node.log()
    )
    assert [counts for counts, _ in completions] == [
        "1 series, 2 instance(s)",
        "2 series, 3 instance(s)",
    ]
    with node.engine().connect() as connection:
        ids = connection.execute(select(jobs.c.id).order_by(jobs.c.id)).scalars()
        assert [int(job) for _, job in completions] == list(ids)
    assert study_uid not in node.log()  # INFO names the job, never the study's UID

    # A hard stop while a job runs, and one still pending: both run after the restart.
    node.stop(signal.SIGKILL)
    with node.engine().begin() as connection:
        connection.execute(update(jobs).values(state=JOB_RUNNING))
        connection.execute(
            jobs.insert().values(
                study_instance_uid=study_uid,
                state=JOB_PENDING,
                created_at=time.time(),
                updated_at=time.time(),
            )
        )
    node.start()
    wait_until(lambda: study_jobs(node, study_uid) == [JOB_DONE] * 3)
    assert "job(s) interrupted by the last stop run again" in node.log()


def child_processes(pid: int) -> list[int]:
    """The live children of `pid`, started by any of its threads."""
    children = []
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        children += [int(child) for child in listing.read_text().split()]
    return [child for child in children if is_alive(child)]


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has ended; nobody may be left to reap it


def test_job_workers_stop_when_the_main_process_is_killed(make_node, tmp_path):
    node = make_node(study={"stable_seconds": 0.5, "check_interval_seconds": 0.2})
    node.start()
    study_uid = send_new_study(node, tmp_path / "study")
    wait_until(lambda: study_jobs(node, study_uid) == [JOB_DONE])
    children = child_processes(node.process.pid)  # the idle job worker and its helpers
    assert children
    node.stop(signal.SIGKILL)
    wait_until(lambda: not any(is_alive(child) for child in children), timeout=60)


def test_receivers_stop_when_the_main_process_is_killed(make_node):
    """Killed while its listener held a lock shared with the receivers, the main process left
    one receiver waiting on that lock for ever (seen once here): now there is none to hold."""
    node = make_node(dicom={"workers": 2})
    node.start()
    receivers = wait_until(lambda: receiving_processes(node.process.pid))
    node.stop(signal.SIGKILL)
    deadline = time.monotonic() + 20
    while True:  # the child receiver notices and releases the port
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", node.port)) != 0:
                break
        assert time.monotonic() < deadline, "a receiver outlived the main process"
        time.sleep(0.2)
    wait_until(lambda: not any(is_alive(pid) for pid in receivers), timeout=20)


def test_a_killed_receiving_process_is_replaced(make_node, tmp_path):
    node = make_node(dicom={"workers": 2})
    node.start()
    receivers = wait_until(lambda: receiving_processes(node.process.pid))
    for pid in receivers:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: "starting it again" in node.log())
    folders = [tmp_path / f"study{i}" for i in range(4)]
    for folder in folders:
        write_study(folder, 5)
    senders = [
        subprocess.Popen(
            [str(DCMTK / "storescu"), "-aec", "AI_NODE", "127.0.0.1", str(node.port), "+sd"]
            + [str(folder)],
            env=TOOL_ENV,
        )
        for folder in folders
    ]
    assert [sender.wait(timeout=60) for sender in senders] == [0, 0, 0, 0]
    assert len(stored_rows(node)) == 20


def test_files_created_ahead(tmp_path, monkeypatch):
    """A receiving process creates its files ahead, in one folder flushed once for all of them;
    the unused ones go at a clean stop, or once too old for recovery's window to see them."""
    storage = StorageArea(tmp_path, names_ahead=4)
    written = [storage.write([b"x" * 10]) for _ in range(3)]
    for relative in written:
        storage.sync(relative)
    files = list(tmp_path.glob("??/??/*.dcm"))
    assert len(files) == 4 and len({path.parent for path in files}) == 1
    assert sorted(path.stat().st_size for path in files) == [0, 10, 10, 10]

    monkeypatch.setattr(storage_module, "_NAMES_AHEAD_SECONDS", 0.0)
    written.append(storage.write([b"y"]))  # the one left is stale: a new batch
    storage.sync(written[-1])
    assert len(list(tmp_path.glob("??/??/*.dcm"))) == 3 + 4

    storage.close()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("??/??/*.dcm")) == sorted(
        written
    )
    assert [(tmp_path / relative).read_bytes() for relative in written] == [b"x" * 10] * 3 + [b"y"]
