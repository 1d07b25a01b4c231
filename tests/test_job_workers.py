"""A job worker killed outright (SIGKILL, the OOM killer) is replaced: the job it was running
runs again, attempts counted, and every later job still runs, without a restart of the node."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pydicom
from sqlalchemy import select

from dicom_node.index.schema import JOB_DONE, JOB_RUNNING, jobs

from .conftest import CT_SERIES, configured_node
from .test_durability import child_processes, send_new_study, study_jobs, wait_until
from .test_results_delivery import storescu_ct


def job_worker(node) -> int:
    """The node's job worker process (with one receiving process, its only spawned child)."""

    def spawned() -> list[int]:
        return [
            pid
            for pid in child_processes(node.process.pid)
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]

    (pid,) = wait_until(spawned, timeout=30)
    return pid


def attempts(node, study_uid: str) -> list[int]:
    with node.engine().connect() as connection:
        return list(
            connection.execute(
                select(jobs.c.attempts).where(jobs.c.study_instance_uid == study_uid)
            ).scalars()
        )


def test_a_killed_job_worker_is_replaced_and_its_job_runs_again(tmp_path):
    node = configured_node(
        tmp_path / "node",
        f"sqlite:///{tmp_path / 'index.sqlite'}",
        study={"stable_seconds": 0.5, "check_interval_seconds": 0.2},
    )
    node.start()
    try:
        first = send_new_study(node, tmp_path / "first")
        wait_until(lambda: study_jobs(node, first) == [JOB_DONE], timeout=120)

        # Killed while idle: the next study's job is not left running for ever.
        os.kill(job_worker(node), signal.SIGKILL)
        second = send_new_study(node, tmp_path / "second")
        wait_until(lambda: study_jobs(node, second) == [JOB_DONE], timeout=120)

        # Killed in the middle of the CT's job: the job runs again, in a new worker.
        ct_uid = str(pydicom.dcmread(next(CT_SERIES.glob("*.dcm"))).StudyInstanceUID)
        assert storescu_ct(node.port, "AI_NODE").returncode == 0
        wait_until(lambda: study_jobs(node, ct_uid) == [JOB_RUNNING], timeout=60)
        os.kill(job_worker(node), signal.SIGKILL)
        wait_until(lambda: study_jobs(node, ct_uid) == [JOB_DONE], timeout=300)
        assert attempts(node, ct_uid) == [2]
        assert "the job worker died while running it" in node.log()
    finally:
        node.stop(signal.SIGKILL)
