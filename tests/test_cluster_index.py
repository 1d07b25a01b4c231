"""The index's part of the celery engine, on PostgreSQL: the claim that lets one worker run a
job (and another take it over when that worker dies), the atomic taking of outbox rows by
several senders, the publishers' sharing of jobs, and the database's clock."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import insert, select

from dicom_node.index import clock as clock_module
from dicom_node.index.clock import DatabaseClock
from dicom_node.index.cluster_jobs import Claim, claim_job, jobs_to_publish, not_published
from dicom_node.index.database import open_engine
from dicom_node.index.jobs import finish, retry
from dicom_node.index.outbox import OutboxTable
from dicom_node.index.schema import JOB_PENDING, jobs, studies

from .conftest import new_database


@pytest.fixture
def engine(tmp_path):
    with new_database("postgresql", tmp_path) as url:
        engine = open_engine(url, create=True)
        yield engine
        engine.dispose()


def new_job(engine, study_uid: str) -> int:
    with engine.begin() as connection:
        if (
            connection.execute(
                select(studies.c.study_instance_uid).where(
                    studies.c.study_instance_uid == study_uid
                )
            ).first()
            is None
        ):
            connection.execute(
                insert(studies).values(study_instance_uid=study_uid, last_received_at=0.0)
            )
        return connection.execute(
            insert(jobs)
            .values(
                study_instance_uid=study_uid,
                state=JOB_PENDING,
                created_at=0.0,
                updated_at=0.0,
                attempts=0,
                error="",
            )
            .returning(jobs.c.id)
        ).scalar_one()


def test_a_job_is_run_by_one_worker_at_a_time(engine):
    job_id = new_job(engine, "1.2.3")
    outcome, job = claim_job(engine, job_id)
    assert outcome is Claim.TAKEN and job is not None
    assert (job.attempts, job.interrupted) == (1, False)
    assert claim_job(engine, job_id) == (Claim.BUSY, None)  # a duplicate message meanwhile
    finish(engine, job_id)
    job.release()
    assert claim_job(engine, job_id) == (Claim.FINISHED, None)


def test_two_jobs_of_one_study_never_run_at_once(engine):
    first, second = new_job(engine, "1.2.3"), new_job(engine, "1.2.3")
    other = new_job(engine, "1.2.4")
    _, job = claim_job(engine, first)
    assert claim_job(engine, second) == (Claim.BUSY, None)
    outcome, elsewhere = claim_job(engine, other)
    assert outcome is Claim.TAKEN
    for held in (job, elsewhere):
        held.release()
    assert claim_job(engine, second)[0] is Claim.TAKEN


def test_the_job_of_a_worker_that_died_is_taken_over(engine):
    job_id = new_job(engine, "1.2.3")
    _, job = claim_job(engine, job_id)
    # The worker dies: its connection to PostgreSQL closes without a word.
    job._connection.connection.dbapi_connection.close()
    outcome, again = claim_job(engine, job_id)
    assert outcome is Claim.TAKEN
    assert (again.attempts, again.interrupted) == (2, True)


def test_senders_never_take_the_same_outbox_row(engine):
    table = OutboxTable(engine)
    for number in range(5):
        table.add("pacs", f"1.2.{number}", f"x/{number}", None)
    table.add("other", "1.2.9", "x/9", None)
    now = time.time() + 1
    first = table.take_due(now, "pacs", limit=3, hold_seconds=600)
    second = table.take_due(now, "pacs", limit=3, hold_seconds=600)
    assert [row.sop_instance_uid for row in first] == ["1.2.0", "1.2.1", "1.2.2"]
    assert [row.sop_instance_uid for row in second] == ["1.2.3", "1.2.4"]
    assert table.take_due(now, "pacs", limit=3, hold_seconds=600) == []
    # a sender that died: its rows are due again once the hold is over
    assert len(table.take_due(now + 601, "pacs", limit=10, hold_seconds=600)) == 5
    assert table.due_destinations(now) == ["other"]


def test_each_job_is_published_by_one_publisher_and_again_when_the_broker_lost_it(engine):
    ids = [new_job(engine, "1.2.3"), new_job(engine, "1.2.4")]
    assert [job_id for job_id, _ in jobs_to_publish(engine, 300)] == ids
    assert jobs_to_publish(engine, 300) == []  # another receiver, at the same time
    not_published(engine, ids[:1])  # the broker was down
    assert [job_id for job_id, _ in jobs_to_publish(engine, 300)] == ids[:1]
    finish(engine, ids[0])
    assert jobs_to_publish(engine, 300) == []
    retry(engine, ids[0])  # `dicom-node jobs retry`: published again at once
    assert [job_id for job_id, _ in jobs_to_publish(engine, 300)] == ids[:1]
    finish(engine, ids[0])
    time.sleep(0.1)
    # published long enough ago and still not done: a broker that came back empty
    assert [job_id for job_id, _ in jobs_to_publish(engine, 0.05)] == ids[1:]


def test_a_host_whose_clock_is_wrong_reads_the_database_clock(engine, monkeypatch):
    real = time.time

    class AnHourAhead:
        @staticmethod
        def time() -> float:
            return real() + 3600

    monkeypatch.setattr(clock_module, "time", AnHourAhead)
    assert abs(DatabaseClock(engine).now() - real()) < 5
