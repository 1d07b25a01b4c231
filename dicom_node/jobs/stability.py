"""Study stability: a study quiet for `study.stable_seconds` is complete and gets a job row.

The job row is the durable hand-over to the pipeline (de-identify, infer, deliver). A study
that receives new instances goes back to `receiving` (done by the index writer); when it is
quiet again it gets a new job, unless one is still pending.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, and_, select, update

from ..index.schema import JOB_PENDING, STUDY_COMPLETE, STUDY_RECEIVING, jobs, studies
from ..index.writer import STUDY_TOUCH_INTERVAL_SECONDS
from ..periodic import PeriodicThread

log = logging.getLogger(__name__)


class StabilityMonitor(PeriodicThread):
    """Marks quiet studies complete and writes their job rows, in one transaction each."""

    def __init__(self, engine: Engine, stable_seconds: float, interval: float) -> None:
        super().__init__("study stability check", interval)
        self._engine = engine
        self._stable_seconds = stable_seconds

    def run_once(self, now: float) -> list[str]:
        """Complete every study quiet since before `now - stable_seconds`; return their UIDs."""
        # Writers refresh last_received_at at most once per touch interval.
        cutoff = now - self._stable_seconds - STUDY_TOUCH_INTERVAL_SECONDS
        quiet = and_(studies.c.state == STUDY_RECEIVING, studies.c.last_received_at <= cutoff)
        completed = []
        with self._engine.connect() as connection:
            candidates = list(
                connection.execute(select(studies.c.study_instance_uid).where(quiet)).scalars()
            )
        for study_uid in candidates:
            with self._engine.begin() as connection:
                # The guard repeats the condition: an instance committed since the select
                # keeps the study receiving.
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
                    connection.execute(
                        jobs.insert().values(
                            study_instance_uid=study_uid,
                            state=JOB_PENDING,
                            created_at=now,
                            updated_at=now,
                            attempts=0,
                            error="",
                        )
                    )
            completed.append(study_uid)
            log.info(
                "study complete after %.0f s without new instances: job pending",
                self._stable_seconds,
            )
        return completed
