"""The job runner: takes pending jobs and runs them in worker processes (``jobs.workers``), so
the heavy work on a study never holds the receiving or HTTP threads of the node.

A stop leaves the jobs in progress as they are: they are still marked running, and the next
start puts them back to pending (jobs.requeue_interrupted), which is safe because running a job
again never queues an object twice.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from ..audit import open_trail
from ..config import ConfigError, NodeConfig
from ..index.jobs import Job, claim, finish, requeue, requeue_interrupted
from ..logging_setup import configure_logging

if TYPE_CHECKING:  # what a job needs is imported by the worker processes only
    from .context import StudyJobContext

log = logging.getLogger(__name__)

#: a job whose worker died this many times under it (killed, out of memory) is failed, so one
#: study that kills its worker cannot hold the runner for ever
MAX_WORKER_DEATHS = 3

#: objects a job worker allocates between two collections of the youngest generation: a CT job
#: makes hundreds of thousands of pydicom and highdicom objects, and CPython's default (700) ran
#: hundreds of collections per job, about 0.6 s of its 6 s of CPU (benchmarks/ct_job.py), for
#: the same peak memory
YOUNG_COLLECTION_THRESHOLD = 10_000

_context: StudyJobContext | None = None
_cannot_start = ""
_PR_SET_PDEATHSIG = 1


def collect_garbage_for_jobs() -> None:
    """Collect young objects less often in this process (a job worker)."""
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


def _die_with_the_node(node_pid: int) -> None:
    """A worker must not outlive a node killed outright (SIGKILL, the OOM killer): it would
    keep its models in memory forever. Its job, left running, is run again at the next start.

    The kernel signals the worker when the thread that started it ends: the runner's thread,
    which lives as long as the runner.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != node_pid:  # the node died before the request took effect
        os._exit(1)


def _start_worker(config: NodeConfig, node_pid: int) -> None:
    global _context, _cannot_start
    _die_with_the_node(node_pid)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the node's to handle (a reload)
    collect_garbage_for_jobs()
    configure_logging(config.logging.level)
    open_trail(config.audit, config.audit_file, config.ae_title)
    from .context import StudyJobContext

    try:
        _context = StudyJobContext.open(config)
    except ConfigError as error:  # e.g. a bundle replaced by a broken one since the start
        # Raising here would break the pool for good; each job says why instead.
        _cannot_start = f"the job worker cannot start: {error}"


def _work(job_id: int, study_uid: str) -> str:
    """Run one job in a worker process; the error to record, or "" when it went through."""
    if _context is None:
        return _cannot_start
    from .context import StudyJobError
    from .study import run_study_job

    try:
        run_study_job(_context, job_id, study_uid)
    except StudyJobError as error:
        return str(error)
    return ""


class JobRunner:
    """Claims jobs while a worker is free and records each one's outcome."""

    def __init__(
        self,
        config: NodeConfig,
        engine: Engine,
        interval: float = 1.0,
        on_finished: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._engine = engine
        self._interval = interval
        #: called once a job's outcome is recorded: its results wait in the outbox
        self._on_finished = on_finished
        self._stop = threading.Event()
        #: set by a new job row (`wake`), a job's end, a new configuration or the stop: the
        #: runner then looks at once instead of at the end of its interval
        self._woken = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobs", daemon=True)
        self._pool: ProcessPoolExecutor | None = None
        #: each running job, and the pool (by generation) its worker belongs to
        self._running: dict[Future, tuple[Job, int]] = {}
        self._generation = 0
        self._reconfigured = threading.Event()

    def start(self) -> None:
        requeued = requeue_interrupted(self._engine)
        if requeued:
            log.info("%d job(s) interrupted by the last stop run again", requeued)
        self._pool = self._new_pool()
        self._thread.start()

    def _new_pool(self) -> ProcessPoolExecutor:
        self._generation += 1
        return ProcessPoolExecutor(
            max_workers=self._config.jobs.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self._config, os.getpid()),
        )

    def _replace_pool(self) -> None:
        """A worker that died (SIGKILL, the OOM killer) breaks the whole pool: every job in it
        ends and every later submit fails. A new pool takes the next jobs."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()

    def reconfigure(self, config: NodeConfig) -> None:
        """Run the next jobs with a reloaded configuration (routes, destinations): workers are
        given theirs when they start, so a new pool takes the next jobs while the running ones
        finish in the old pool, with the configuration they started with."""
        self._config = config
        self._reconfigured.set()
        self._woken.set()

    def wake(self) -> None:
        """Claim jobs now: new job rows were just written in this process."""
        self._woken.set()

    def stop(self) -> None:
        self._stop.set()
        self._woken.set()
        self._thread.join(timeout=10)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._reconfigured.is_set():
                self._reconfigured.clear()
                assert self._pool is not None
                self._pool.shutdown(wait=False)  # its running jobs end and are recorded
                self._pool = self._new_pool()
            try:
                self._fill()
            except Exception as error:  # a database outage must not end the runner
                log.error("cannot claim jobs: %s", error)
            self._woken.wait(self._interval)
            self._woken.clear()
            for future in [future for future in self._running if future.done()]:
                self._record(future, *self._running.pop(future))

    def _fill(self) -> None:
        assert self._pool is not None
        while len(self._running) < self._config.jobs.workers and not self._stop.is_set():
            job = claim(self._engine)
            if job is None:
                return
            log.info("job %d started (attempt %d)", job.id, job.attempts)
            try:
                future = self._pool.submit(_work, job.id, job.study_instance_uid)
            except BrokenProcessPool:
                requeue(self._engine, job.id, "")
                self._replace_pool()
                return
            self._running[future] = (job, self._generation)
            future.add_done_callback(lambda _future: self._woken.set())

    def _record(self, future: Future, job: Job, generation: int) -> None:
        try:
            error = future.result()
        except BrokenProcessPool:
            self._worker_died(job, generation)
            return
        except Exception as failure:  # a bug in the worker's wrapping: the job says so
            error = f"unexpected {type(failure).__name__}: {failure}"
        try:
            finish(self._engine, job.id, error)
        except Exception as failure:
            log.error("job %d: cannot record its outcome: %s", job.id, failure)
            return
        if error:
            log.error("job %d failed: %s", job.id, error)
        else:
            log.info("job %d done", job.id)
        if self._on_finished is not None:
            self._on_finished()

    def _worker_died(self, job: Job, generation: int) -> None:
        """The job's worker process died under it: run the job again in a new worker, unless
        it has now died ``MAX_WORKER_DEATHS`` times (``attempts`` counts every claim)."""
        if generation == self._generation:  # the other jobs of that pool find it replaced
            self._replace_pool()
        why = (
            f"the job worker died while running it (attempt {job.attempts}: killed, out of memory?)"
        )
        if job.attempts >= MAX_WORKER_DEATHS:
            finish(self._engine, job.id, why)
            log.error("job %d failed: %s", job.id, why)
            return
        requeue(self._engine, job.id, why)
        log.error("job %d: %s; it runs again", job.id, why)
