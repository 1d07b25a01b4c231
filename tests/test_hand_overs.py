"""Each stage of the embedded node wakes the next when it hands work over, instead of leaving it
to the next one's round: a new job row wakes the job runner, a finished job (its results in the
outbox) the outbox sender. The rounds here are an hour apart, so only a wake-up can explain
work done within the test."""

from __future__ import annotations

import threading
import time

import yaml
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.config import DuplicatePolicy, load_config
from dicom_node.index.database import open_engine
from dicom_node.index.schema import JOB_FAILED, jobs
from dicom_node.index.writer import STUDY_TOUCH_INTERVAL_SECONDS, IndexWriter
from dicom_node.jobs.runner import JobRunner
from dicom_node.jobs.stability import StabilityMonitor
from dicom_node.periodic import PeriodicThread

from .test_study_completion import new_instance

HOUR = 3600.0


class Rounds(PeriodicThread):
    def __init__(self) -> None:
        super().__init__("rounds", HOUR)
        self.done = threading.Event()

    def run_once(self, now: float) -> None:
        self.done.set()


def test_a_periodic_thread_runs_its_round_when_woken_and_stops_at_once():
    rounds = Rounds()
    rounds.start()
    try:
        assert not rounds.done.wait(0.3)  # an hour to its first round
        rounds.wake()
        assert rounds.done.wait(30)
    finally:
        started = time.monotonic()
        rounds.stop()
    assert time.monotonic() - started < 10  # not at the end of its interval


def test_the_stability_monitor_wakes_the_job_taker_only_for_new_jobs(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'index.sqlite'}")
    writer = IndexWriter(engine, DuplicatePolicy.KEEP_FIRST)
    study = generate_uid()
    writer.submit(new_instance(study, generate_uid(), 100.0)).result()
    writer.close()
    woken: list[float] = []
    monitor = StabilityMonitor(engine, 2.0, HOUR, on_jobs=lambda: woken.append(time.time()))
    assert monitor.run_once(101.0) == [] and woken == []  # not quiet yet
    assert monitor.run_once(100.0 + 2.0 + STUDY_TOUCH_INTERVAL_SECONDS + 0.1) == [study]
    assert len(woken) == 1
    assert monitor.run_once(500.0) == [] and len(woken) == 1  # complete already: no new job
    engine.dispose()


def test_a_new_job_row_wakes_the_job_runner_which_announces_the_job_finished(tmp_path):
    """The monitor completes a study and wakes the runner (asleep for an hour), which runs the
    job (it fails: the index names a file that is not there) and then says it is finished."""
    settings = {
        "storage": {
            "path": str(tmp_path / "storage"),
            "database": f"sqlite:///{tmp_path / 'index.sqlite'}",
        },
        "logging": {"level": "WARNING"},
    }
    (tmp_path / "node.yaml").write_text(yaml.safe_dump(settings))
    config = load_config(tmp_path / "node.yaml")
    engine = open_engine(config.storage.database_url)
    writer = IndexWriter(engine, DuplicatePolicy.KEEP_FIRST)
    study = generate_uid()
    writer.submit(new_instance(study, generate_uid(), time.time() - 100)).result()
    writer.close()
    finished = threading.Event()
    runner = JobRunner(config, engine, interval=HOUR, on_finished=finished.set)
    monitor = StabilityMonitor(engine, 2.0, HOUR, on_jobs=runner.wake)
    runner.start()
    try:
        time.sleep(1)  # its first look at the index, which finds no job, is over
        assert monitor.run_once(time.time()) == [study]
        assert finished.wait(120), "the finished job woke nobody"
        with engine.connect() as connection:
            state = connection.execute(
                select(jobs.c.state).where(jobs.c.study_instance_uid == study)
            ).scalar_one()
        assert state == JOB_FAILED
    finally:
        runner.stop()
        engine.dispose()
