"""Study stability: a study quiet for `study.stable_seconds` is complete and gets a job row.

The job row is the durable hand-over to the pipeline (de-identify, infer, deliver). A study
that receives new instances goes back to `receiving` (done by the index writer); when it is
quiet again it gets a new job, unless one is still pending.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine, and_, select, update

from .index.database import dialect_insert
from .index.schema import JOB_PENDING, STUDY_COMPLETE, STUDY_RECEIVING, jobs, studies
from .index.writer import STUDY_TOUCH_INTERVAL_SECONDS

log = logging.getLogger(__name__)


class StabilityMonitor:
    """Marks quiet studies complete and writes their job rows, in one transaction each."""

    def __init__(self, engine: Engine, stable_seconds: float, interval: float) -> None:
        self._engine = engine
        self._stable_seconds = stable_seconds
        self._interval = interval
        self._insert = dialect_insert(engine)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stability", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.run_once(time.time())
            except Exception as error:  # a database outage must not end the monitor
                log.error("study stability check failed: %s", error)

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
