"""Study completion: a study quiet since a cutoff becomes complete and gets a pending job row,
in one transaction, so the hand-over to the jobs is durable and never doubled.

The guarded update of the study row takes its row lock (PostgreSQL; SQLite's write lock), which
the job insert runs under: completions of one study by several monitors (several nodes on one
PostgreSQL) are serialised by the database, and the second finds the study complete already.
Writers only ever move `last_received_at` forward (`index.writer`), so a study another process
is still receiving never looks quiet."""

from __future__ import annotations

import json

from sqlalchemy import Connection, Engine, and_, select, update

from .schema import JOB_PENDING, STUDY_COMPLETE, STUDY_RECEIVING, jobs, studies


def complete_quiet_studies(engine: Engine, cutoff: float, now: float) -> list[str]:
    """Mark every study that received nothing since ``cutoff`` complete, with a pending job
    unless one is pending already (created at ``now``); returns their UIDs."""
    quiet = and_(studies.c.state == STUDY_RECEIVING, studies.c.last_received_at <= cutoff)
    completed = []
    with engine.connect() as connection:
        candidates = list(
            connection.execute(select(studies.c.study_instance_uid).where(quiet)).scalars()
        )
    for study_uid in candidates:
        with engine.begin() as connection:
            # The guard repeats the condition: an instance committed since the select keeps
            # the study receiving.
            changed = connection.execute(
                update(studies)
                .where(and_(studies.c.study_instance_uid == study_uid, quiet))
                .values(state=STUDY_COMPLETE)
            ).rowcount
            if not changed:
                continue
            pending = connection.execute(
                select(jobs.c.id).where(
                    and_(jobs.c.study_instance_uid == study_uid, jobs.c.state == JOB_PENDING)
                )
            ).first()
            if pending is None:
                _insert_job(connection, study_uid, now)
        completed.append(study_uid)
    return completed


def complete_with_models(engine: Engine, study_uid: str, models: list[str], now: float) -> int:
    """The study complete now, with a pending job that runs ``models`` on every series whatever
    the routing rules say (an upload: complete when its request ends, models chosen by a
    person); returns the job's id. The stability monitor then leaves the study alone, unless
    new instances make it receiving again."""
    with engine.begin() as connection:
        connection.execute(
            update(studies)
            .where(studies.c.study_instance_uid == study_uid)
            .values(state=STUDY_COMPLETE)
        )
        return _insert_job(connection, study_uid, now, json.dumps(models))


def _insert_job(
    connection: Connection, study_uid: str, now: float, models: str | None = None
) -> int:
    inserted = connection.execute(
        jobs.insert().values(
            study_instance_uid=study_uid,
            state=JOB_PENDING,
            created_at=now,
            updated_at=now,
            attempts=0,
            error="",
            models=models,
        )
    ).inserted_primary_key
    assert inserted is not None  # an insert of one row has its key
    return int(inserted[0])
