"""Jobs shared by a cluster (celery engine, PostgreSQL): which jobs to publish to the broker,
and the claim that lets exactly one worker run a job.

The claim is a PostgreSQL session advisory lock on the job's study, held on its own connection
for as long as the job runs. The database drops it when that connection ends, however the
worker ends (a kill -9, a host that loses power: its TCP connection closes or times out), so a
job whose runner died is claimable again at once, with no lease to wait out or heartbeat to
keep; and as the lock is the study's, two jobs of one study never run at once either.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, and_, delete, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert

from .clock import database_time
from .schema import JOB_PENDING, JOB_RUNNING, job_dispatch, jobs

#: the first key of the node's advisory locks (the second is the study's hash)
_LOCK_SPACE = 1919


def jobs_to_publish(engine: Engine, republish_seconds: float) -> list[tuple[int, str]]:
    """The jobs not done that were never published, or not for ``republish_seconds``, or made
    pending again since they were, marked published now; (job id, study UID) each. Several
    publishers (receivers) may call it at once: a job is returned to one of them."""
    with engine.begin() as connection:
        now = database_time(connection)
        # made pending again since it was published (`dicom-node jobs retry`): publish at once
        connection.execute(
            delete(job_dispatch).where(
                and_(
                    job_dispatch.c.job_id == jobs.c.id,
                    jobs.c.state == JOB_PENDING,
                    jobs.c.updated_at > job_dispatch.c.published_at,
                )
            )
        )
        waiting = select(jobs.c.id, literal(now)).where(
            jobs.c.state.in_([JOB_PENDING, JOB_RUNNING])
        )
        insert = postgresql_insert(job_dispatch).from_select(["job_id", "published_at"], waiting)
        marked = connection.execute(
            insert.on_conflict_do_update(
                index_elements=["job_id"],
                set_={"published_at": now},
                where=job_dispatch.c.published_at < now - republish_seconds,
            ).returning(job_dispatch.c.job_id)
        ).scalars()
        ids = list(marked)
        if not ids:
            return []
        rows = connection.execute(
            select(jobs.c.id, jobs.c.study_instance_uid)
            .where(jobs.c.id.in_(ids))
            .order_by(jobs.c.id)
        )
        return [(job_id, study_uid) for job_id, study_uid in rows]


def not_published(engine: Engine, job_ids: list[int]) -> None:
    """The broker did not take these jobs: the next round publishes them again."""
    with engine.begin() as connection:
        connection.execute(delete(job_dispatch).where(job_dispatch.c.job_id.in_(job_ids)))


class Claim(enum.Enum):
    """What a worker found when it tried to claim a job."""

    TAKEN = "taken"  # this worker runs it now
    FINISHED = "finished"  # done or failed already (a duplicate message): nothing to do
    BUSY = "busy"  # its study is being processed by another worker (this job or another)


@dataclass
class ClaimedJob:
    """A job this worker holds; `release` when it is finished (or the process ends)."""

    id: int
    study_instance_uid: str
    attempts: int
    #: the job was found running: the worker that ran it died
    interrupted: bool
    _connection: Connection

    def release(self) -> None:
        try:
            self._connection.execute(
                text("SELECT pg_advisory_unlock(:space, hashtext(:study))"),
                {"space": _LOCK_SPACE, "study": self.study_instance_uid},
            )
        finally:
            self._connection.close()


def claim_job(engine: Engine, job_id: int) -> tuple[Claim, ClaimedJob | None]:
    """Take the job if it is not finished and no live worker processes its study."""
    with engine.connect() as connection:
        row = connection.execute(
            select(jobs.c.study_instance_uid, jobs.c.state).where(jobs.c.id == job_id)
        ).first()
    if row is None or row.state not in (JOB_PENDING, JOB_RUNNING):
        return Claim.FINISHED, None
    study_uid = row.study_instance_uid
    holder = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        locked = holder.execute(
            text("SELECT pg_try_advisory_lock(:space, hashtext(:study))"),
            {"space": _LOCK_SPACE, "study": study_uid},
        ).scalar_one()
        if not locked:
            holder.close()
            return Claim.BUSY, None
        with engine.begin() as connection:
            found = connection.execute(
                select(jobs.c.state, jobs.c.attempts).where(jobs.c.id == job_id).with_for_update()
            ).first()
            if found is not None and found.state in (JOB_PENDING, JOB_RUNNING):
                connection.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(
                        state=JOB_RUNNING,
                        attempts=found.attempts + 1,
                        updated_at=database_time(connection),
                    )
                )
    except BaseException:
        holder.close()
        raise
    claimed = ClaimedJob(job_id, study_uid, 0, False, holder)
    if found is None or found.state not in (JOB_PENDING, JOB_RUNNING):
        claimed.release()
        return Claim.FINISHED, None
    claimed.attempts = found.attempts + 1
    claimed.interrupted = found.state == JOB_RUNNING
    return Claim.TAKEN, claimed
