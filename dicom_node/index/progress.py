"""Where a running job is: its models, its step and percentage on the job row (for `/status`,
`dicom-node jobs` and the console's running work), and its timed steps (for a study's timeline).

Written by the job's worker as it goes, one short transaction each, so another process (the
node's HTTP side, the command line) reads the progress of a job running anywhere."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine, select, update

from .schema import JOB_RUNNING, job_attempts, job_steps, jobs


@dataclass(frozen=True)
class RunningJob:
    """A job in progress, as `/status` lists it."""

    id: int
    study_instance_uid: str
    models: list[str]
    step: str
    percent: int
    started_at: float | None


def started(engine: Engine, job_id: int, models: list[str]) -> None:
    """An attempt begins: its start time and the models it is going to run, and its record
    (which `jobs.finish` closes)."""
    now = time.time()
    with engine.begin() as connection:
        connection.execute(
            update(jobs)
            .where(jobs.c.id == job_id)
            .values(started_at=now, running_models=",".join(models), step="starting", percent=0)
        )
        attempt = connection.execute(select(jobs.c.attempts).where(jobs.c.id == job_id)).scalar()
        connection.execute(
            job_attempts.insert().values(job_id=job_id, attempt=attempt, started_at=now)
        )


def at_step(engine: Engine, job_id: int, step: str, percent: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(jobs).where(jobs.c.id == job_id).values(step=step, percent=percent)
        )


def begin_step(engine: Engine, job_id: int, name: str) -> int:
    """A timed step begins; returns its id for `end_step`."""
    with engine.begin() as connection:
        inserted = connection.execute(
            job_steps.insert().values(job_id=job_id, name=name, started_at=time.time())
        ).inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


def end_step(engine: Engine, step_id: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(job_steps).where(job_steps.c.id == step_id).values(finished_at=time.time())
        )


def running(engine: Engine) -> list[RunningJob]:
    """The jobs in progress, oldest first."""
    statement = (
        select(
            jobs.c.id,
            jobs.c.study_instance_uid,
            jobs.c.running_models,
            jobs.c.step,
            jobs.c.percent,
            jobs.c.started_at,
        )
        .where(jobs.c.state == JOB_RUNNING)
        .order_by(jobs.c.id)
    )
    with engine.connect() as connection:
        return [
            RunningJob(
                id=row.id,
                study_instance_uid=row.study_instance_uid,
                models=[name for name in (row.running_models or "").split(",") if name],
                step=row.step or "waiting for a worker",
                percent=row.percent or 0,
                started_at=row.started_at,
            )
            for row in connection.execute(statement)
        ]
