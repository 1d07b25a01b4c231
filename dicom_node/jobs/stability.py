"""Study stability: a study quiet for `study.stable_seconds` is complete and gets a job row.

The job row is the durable hand-over to the pipeline (de-identify, infer, deliver). A study
that receives new instances goes back to `receiving` (done by the index writer); when it is
quiet again it gets a new job, unless one is still pending.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Engine

from ..index.contents import study_series
from ..index.jobs import pending_job
from ..index.studies import complete_quiet_studies
from ..index.writer import STUDY_TOUCH_INTERVAL_SECONDS
from ..periodic import PeriodicThread

log = logging.getLogger(__name__)


class StabilityMonitor(PeriodicThread):
    """Marks quiet studies complete and writes their job rows, in one transaction each."""

    def __init__(
        self,
        engine: Engine,
        stable_seconds: float,
        interval: float,
        clock: Callable[[], float] = time.time,
        on_jobs: Callable[[], None] | None = None,
    ) -> None:
        super().__init__("study stability check", interval, clock)
        self._engine = engine
        self._stable_seconds = stable_seconds
        #: called after a round that wrote job rows: wakes what takes them in this process
        self._on_jobs = on_jobs

    def run_once(self, now: float) -> list[str]:
        """Complete every study quiet since before `now - stable_seconds`; return their UIDs."""
        # Writers refresh last_received_at at most once per touch interval.
        cutoff = now - self._stable_seconds - STUDY_TOUCH_INTERVAL_SECONDS
        completed = complete_quiet_studies(self._engine, cutoff, now)
        if completed and self._on_jobs is not None:
            self._on_jobs()
        for study_uid in completed:
            self._announce(study_uid)
        return completed

    def _announce(self, study_uid: str) -> None:
        """Log the completed study by its job (whose `jobs show` names the study): the INFO
        log carries no patient data, and a Study Instance UID may embed an accession number
        or a date, so it stays out too."""
        found = study_series(self._engine, study_uid)
        log.info(
            "study complete after %.0f s without new instances: %d series, %d instance(s); "
            "job %s pending",
            self._stable_seconds,
            len(found),
            sum(item.instances for item in found),
            pending_job(self._engine, study_uid),
        )
