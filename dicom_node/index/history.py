"""What the index recorded of one study, with times: its instances received, the node's results
stored in it, its jobs (each with its timed steps and notes) and the deliveries they queued. The
console builds a study's timeline from it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, Table, func, select

from .schema import instances, job_attempts, job_notes, job_steps, jobs, outbox, series

T = TypeVar("T")


@dataclass(frozen=True)
class Arrivals:
    """Instances that came into the study: how many, the first and the last."""

    instances: int
    first_at: float
    last_at: float


@dataclass(frozen=True)
class JobNote:
    """What a job found or decided (`schema.job_notes`), and when."""

    at: float
    text: str


@dataclass(frozen=True)
class JobStep:
    name: str
    started_at: float
    #: None while it runs, or when its attempt failed or was interrupted
    finished_at: float | None


@dataclass(frozen=True)
class JobAttempt:
    attempt: int
    started_at: float
    #: None while it runs, or when it was interrupted
    finished_at: float | None
    #: done or failed; None when it did not finish
    state: str | None
    error: str


@dataclass(frozen=True)
class JobHistory:
    id: int
    state: str
    attempts: int
    #: when the study became stable and the job was made
    created_at: float
    updated_at: float
    #: when its last attempt started (None: never ran since the index records it)
    started_at: float | None
    error: str
    steps: list[JobStep]
    notes: list[JobNote]
    #: every attempt's start and end, oldest first (jobs run before the index kept them: none)
    attempt_times: list[JobAttempt]


@dataclass(frozen=True)
class Delivery:
    """One object queued for one destination by one of the study's jobs."""

    id: int
    job_id: int
    destination: str
    sop_instance_uid: str
    state: str
    attempts: int
    last_error: str
    created_at: float
    updated_at: float
    next_attempt_at: float


@dataclass(frozen=True)
class StudyHistory:
    #: None: nothing of the study is stored (any more)
    received: Arrivals | None
    #: the node's own results in the study (None: none stored)
    results: Arrivals | None
    jobs: list[JobHistory]
    deliveries: list[Delivery]


def _arrivals(connection: Connection, study_uid: str, own: bool, ae_title: str) -> Arrivals | None:
    """The study's instances stored under ``ae_title`` (``own``: the node's results) or under
    any other calling AE title (what was received), or None where there are none."""
    by_node = instances.c.calling_ae_title == ae_title
    count, first, last = connection.execute(
        select(func.count(), func.min(instances.c.received_at), func.max(instances.c.received_at))
        .select_from(instances.join(series))
        .where(series.c.study_instance_uid == study_uid)
        .where(by_node if own else ~by_node)
    ).one()
    return Arrivals(count, first, last) if count else None


def _by_job(
    connection: Connection, table: Table, ids: list[int], kind: type[T]
) -> dict[int, list[T]]:
    """The rows of a per-job table (its columns named as ``kind``'s fields) of the jobs ``ids``,
    by job, in the order they were written."""
    names = [field.name for field in fields(cast(Any, kind))]
    found: dict[int, list[T]] = {}
    for job_id, *values in connection.execute(
        select(table.c.job_id, *(table.c[name] for name in names))
        .where(table.c.job_id.in_(ids))
        .order_by(table.c.id)
    ):
        found.setdefault(job_id, []).append(kind(*values))
    return found


def study_history(engine: Engine, study_uid: str, own_ae_title: str) -> StudyHistory:
    """Everything the index holds with a time about the study ``study_uid``; results are the
    instances stored under the node's own AE title ``own_ae_title``."""
    with engine.connect() as connection:
        received = _arrivals(connection, study_uid, False, own_ae_title)
        results = _arrivals(connection, study_uid, True, own_ae_title)
        rows = connection.execute(
            select(
                jobs.c.id,
                jobs.c.state,
                jobs.c.attempts,
                jobs.c.created_at,
                jobs.c.updated_at,
                jobs.c.started_at,
                jobs.c.error,
            )
            .where(jobs.c.study_instance_uid == study_uid)
            .order_by(jobs.c.id)
        ).all()
        ids = [row.id for row in rows]
        steps = _by_job(connection, job_steps, ids, JobStep)
        attempts = _by_job(connection, job_attempts, ids, JobAttempt)
        notes = _by_job(connection, job_notes, ids, JobNote)
        deliveries = [
            Delivery(*row)
            for row in connection.execute(
                select(*(outbox.c[name] for name in Delivery.__dataclass_fields__))
                .where(outbox.c.job_id.in_(ids))
                .order_by(outbox.c.id)
            )
        ]
    return StudyHistory(
        received,
        results,
        [
            JobHistory(*row, steps.get(row.id, []), notes.get(row.id, []), attempts.get(row.id, []))
            for row in rows
        ],
        deliveries,
    )


def last_job_states(engine: Engine, study_uids: list[str]) -> dict[str, str]:
    """The state of each study's latest job (studies without a job left out): what a list of
    studies shows of the node's work on them."""
    latest = (
        select(func.max(jobs.c.id))
        .where(jobs.c.study_instance_uid.in_(study_uids))
        .group_by(jobs.c.study_instance_uid)
    )
    with engine.connect() as connection:
        return dict(
            connection.execute(
                select(jobs.c.study_instance_uid, jobs.c.state).where(jobs.c.id.in_(latest))
            ).all()
        )
