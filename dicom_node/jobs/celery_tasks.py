"""The workers' side of the celery engine: the tasks a `dicom-node worker` runs.

``run_job`` claims the job in the index before it runs it (`index.cluster_jobs`): a duplicate
message, or one for a job finished meanwhile, is a no-op, and one whose study another worker is
processing comes back later. A job found running was interrupted (its worker died: the claim's
lock went with its connection) and runs again, up to ``MAX_WORKER_DEATHS`` times in all; its
results exist once, as their UIDs are derived from its sources'. ``deliver`` sends the due
outbox rows of one destination, taken for this worker alone.

Each worker process opens its context (index, storage, bundles on ``inference.device``) with
its first task, after Celery forked it.
"""

from __future__ import annotations

import logging
import time

from celery import Celery, Task

from ..config import NodeConfig
from ..index.cluster_jobs import Claim, ClaimedJob, claim_job
from ..index.jobs import add_note, finish
from ..outbox.destinations.fhir_server import open_fhir_client
from ..outbox.sender import OutboxSender
from .celery_app import DELIVER, RUN_JOB
from .context import StudyJobContext, StudyJobError
from .runner import MAX_WORKER_DEATHS

log = logging.getLogger(__name__)

#: a job whose study another worker processes is looked at again after this long
BUSY_RETRY_SECONDS = 5.0


class WorkerState:
    """What one worker process opens once, with its first task."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._context: StudyJobContext | None = None
        self._sender: OutboxSender | None = None

    def reconfigure(self, config: NodeConfig) -> None:
        """A reloaded configuration, for the pool processes forked after (the worker's main
        process never opens the context: its pool processes do)."""
        self.config = config

    @property
    def context(self) -> StudyJobContext:
        if self._context is None:
            self._context = StudyJobContext.open(self.config)
        return self._context

    @property
    def sender(self) -> OutboxSender:
        if self._sender is None:
            context = self.context
            self._sender = OutboxSender(self.config, context.outbox, open_fhir_client(self.config))
        return self._sender


def _run(context: StudyJobContext, job: ClaimedJob) -> str:
    """Run a claimed job; the error to record, or "" when it went through."""
    from .study import run_study_job

    if job.interrupted:
        why = f"the worker running it died (attempt {job.attempts - 1}: killed, host lost?)"
        if job.attempts > MAX_WORKER_DEATHS:
            return why
        add_note(context.engine, job.id, f"{why}; run again")
    try:
        run_study_job(context, job.id, job.study_instance_uid)
    except StudyJobError as error:
        return str(error)
    except Exception as failure:  # a bug or an outage: the job says so, and can be retried
        return f"unexpected {type(failure).__name__}: {failure}"
    return ""


def register_tasks(app: Celery, config: NodeConfig) -> WorkerState:
    """Bind the node's tasks to ``app``; returns the per-process state they share."""
    state = WorkerState(config)

    @app.task(name=RUN_JOB, bind=True, max_retries=None)
    def run_job(task: Task, job_id: int) -> None:
        context = state.context
        outcome, job = claim_job(context.engine, job_id)
        if outcome is Claim.BUSY:
            log.info(
                "job %d: its study is being processed by another worker: looked at again in %.0f s",
                job_id,
                BUSY_RETRY_SECONDS,
            )
            raise task.retry(countdown=BUSY_RETRY_SECONDS)
        if job is None:
            log.info("job %d: finished already (a message sent again)", job_id)
            return
        try:
            log.info("job %d started (attempt %d)", job.id, job.attempts)
            error = _run(context, job)
            finish(context.engine, job.id, error)
        finally:
            job.release()
        if error:
            log.error("job %d failed: %s", job.id, error)
        else:
            log.info("job %d done", job.id)

    @app.task(name=DELIVER)
    def deliver(destination: str) -> None:
        state.sender.send_destination(destination, time.time())

    return state
