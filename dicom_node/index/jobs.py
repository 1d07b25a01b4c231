"""Job rows: claimed by the job runner, finished with their outcome, retried on request.

A job is one complete study to process. Claiming is one guarded update, so two runners never
take the same job, and a study never has two jobs running at once (a job for a study that got
new instances waits until the running one ends): runners claim under the study's row lock. A
job found running at start was interrupted by a stop or crash: it is pending again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sqlalchemy import Engine, and_, exists, func, select, update
from sqlalchemy.orm import aliased

from .schema import (
    JOB_DONE,
    JOB_FAILED,
    JOB_PENDING,
    JOB_RUNNING,
    job_attempts,
    job_notes,
    jobs,
    studies,
)


@dataclass(frozen=True)
class Job:
    id: int
    study_instance_uid: str
    state: str
    attempts: int
    created_at: float
    updated_at: float
    error: str


_COLUMNS = [jobs.c[name] for name in Job.__dataclass_fields__]


def requeue_interrupted(engine: Engine) -> int:
    """Jobs left running by a stop or crash go back to pending; returns how many."""
    with engine.begin() as connection:
        return connection.execute(
            update(jobs)
            .where(jobs.c.state == JOB_RUNNING)
            .values(state=JOB_PENDING, updated_at=time.time())
        ).rowcount


def requeue(engine: Engine, job_id: int, error: str) -> None:
    """A running job back to pending (its worker died under it), with why in its error."""
    with engine.begin() as connection:
        connection.execute(
            update(jobs)
            .where(and_(jobs.c.id == job_id, jobs.c.state == JOB_RUNNING))
            .values(state=JOB_PENDING, error=error, updated_at=time.time())
        )


def claim(engine: Engine) -> Job | None:
    """The oldest pending job whose study has no job running, now running; None if none."""
    running = aliased(jobs)
    busy = exists().where(
        and_(
            running.c.study_instance_uid == jobs.c.study_instance_uid,
            running.c.state == JOB_RUNNING,
        )
    )
    with engine.begin() as connection:
        for candidate, study_uid in connection.execute(
            select(jobs.c.id, jobs.c.study_instance_uid)
            .where(and_(jobs.c.state == JOB_PENDING, ~busy))
            .order_by(jobs.c.id)
        ).all():
            # Runners on other hosts (PostgreSQL) claim under the study's row lock, so the
            # check below sees a job of the study another runner just took (SQLite: one writer).
            connection.execute(
                select(studies.c.study_instance_uid)
                .where(studies.c.study_instance_uid == study_uid)
                .with_for_update()
            )
            if connection.execute(
                select(running.c.id).where(
                    and_(running.c.study_instance_uid == study_uid, running.c.state == JOB_RUNNING)
                )
            ).first():
                continue
            taken = connection.execute(
                update(jobs)
                .where(and_(jobs.c.id == candidate, jobs.c.state == JOB_PENDING))
                .values(
                    state=JOB_RUNNING,
                    attempts=jobs.c.attempts + 1,
                    updated_at=time.time(),
                    # the last attempt's progress is not this one's (`index.progress`)
                    started_at=None,
                    step=None,
                    percent=None,
                )
            ).rowcount
            if taken:
                row = connection.execute(select(*_COLUMNS).where(jobs.c.id == candidate)).one()
                return Job(*row)
    return None


def finish(engine: Engine, job_id: int, error: str = "") -> None:
    """The job done (or failed, with why), and so its latest attempt's record."""
    state, now = JOB_FAILED if error else JOB_DONE, time.time()
    latest = select(jobs.c.attempts).where(jobs.c.id == job_id).scalar_subquery()
    with engine.begin() as connection:
        connection.execute(
            update(jobs).where(jobs.c.id == job_id).values(state=state, error=error, updated_at=now)
        )
        connection.execute(
            update(job_attempts)
            .where(
                and_(
                    job_attempts.c.job_id == job_id,
                    job_attempts.c.attempt == latest,
                    job_attempts.c.finished_at.is_(None),
                )
            )
            .values(finished_at=now, state=state, error=error)
        )


def retry(engine: Engine, job_id: int) -> bool:
    """A finished or failed job back to pending; False if there is no such job or it runs."""
    with engine.begin() as connection:
        return bool(
            connection.execute(
                update(jobs)
                .where(and_(jobs.c.id == job_id, jobs.c.state.in_([JOB_DONE, JOB_FAILED])))
                .values(state=JOB_PENDING, error="", updated_at=time.time())
            ).rowcount
        )


def counts(engine: Engine) -> dict[str, int]:
    """Jobs by state."""
    statement = select(jobs.c.state, func.count()).group_by(jobs.c.state)
    with engine.connect() as connection:
        return {state: number for state, number in connection.execute(statement)}


def add_note(engine: Engine, job_id: int, text: str) -> None:
    with engine.begin() as connection:
        connection.execute(job_notes.insert().values(job_id=job_id, at=time.time(), text=text))


def notes(engine: Engine, job_id: int) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(job_notes.c.text)
                .where(job_notes.c.job_id == job_id)
                .order_by(job_notes.c.id)
            ).scalars()
        )


def get(engine: Engine, job_id: int) -> Job | None:
    with engine.connect() as connection:
        row = connection.execute(select(*_COLUMNS).where(jobs.c.id == job_id)).first()
        return Job(*row) if row else None


def recent(engine: Engine, limit: int = 50) -> list[Job]:
    with engine.connect() as connection:
        rows = connection.execute(select(*_COLUMNS).order_by(jobs.c.id.desc()).limit(limit))
        return [Job(*row) for row in rows]


def chosen_models(engine: Engine, job_id: int) -> list[str] | None:
    """The models a person chose for the job (`studies.complete_with_models`); None when the
    routing rules choose."""
    with engine.connect() as connection:
        text = connection.execute(select(jobs.c.models).where(jobs.c.id == job_id)).scalar()
    return None if text is None else list(json.loads(text))


def pending_job(engine: Engine, study_uid: str) -> int | None:
    """The id of the study's pending job, if it has one."""
    condition = and_(jobs.c.study_instance_uid == study_uid, jobs.c.state == JOB_PENDING)
    with engine.connect() as connection:
        return connection.execute(select(jobs.c.id).where(condition)).scalar()
