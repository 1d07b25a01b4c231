"""The receivers' side of the celery engine: publish the jobs the index holds to the broker.

In celery mode `serve` runs no job: each round, the publisher marks the jobs that were never
published (or not for ``jobs.republish_seconds`` and still not done) and sends one message each,
on the queue of their route. A broker that is down changes nothing for the receivers (they
only write rows); its jobs are unmarked and published when it is back, and a broker that came
back empty gets them again from the republish. Several receivers publish together: the index
hands each job to one of them. Deliveries due in the outbox are announced on the outbox queue
the same way (the workers take the rows atomically, so an extra message costs nothing).
"""

from __future__ import annotations

import logging

import pydicom
from sqlalchemy import Engine

from ..config import NodeConfig
from ..index.cluster_jobs import jobs_to_publish, not_published
from ..index.contents import received_series
from ..outbox.queue import Outbox
from ..periodic import PeriodicThread
from ..store.storage import StorageArea
from .celery_app import DELIVER, JOBS_QUEUE, OUTBOX_QUEUE, RUN_JOB, celery_app
from .routing import SeriesFacts, matching_routes

log = logging.getLogger(__name__)

#: a destination with due rows is announced again after this long (its last message may be
#: lost with a broker)
DELIVERY_NOTICE_SECONDS = 5.0


def job_queue(config: NodeConfig, engine: Engine, storage: StorageArea, study_uid: str) -> str:
    """The queue of a study's job: that of the first route naming one (``queue: gpu``) whose
    models take one of its series, else the jobs queue. Headers are read only when a route
    names a queue; a file that cannot be read leaves the job on the jobs queue, which fails it
    with the reason."""
    routes = [route for route in config.inference.routes if route.queue and route.models]
    if not routes:
        return JOBS_QUEUE
    for item in received_series(engine, study_uid, config.ae_title):
        try:
            headers = [
                pydicom.dcmread(storage.path(p), stop_before_pixels=True) for p in item.paths
            ]
        except (OSError, ValueError, pydicom.errors.InvalidDicomError):
            return JOBS_QUEUE
        for route in matching_routes(routes, SeriesFacts.from_headers(headers)):
            return str(route.queue)
    return JOBS_QUEUE


class JobPublisher(PeriodicThread):
    """Publishes jobs and due deliveries to the broker, until it takes them."""

    def __init__(
        self,
        config: NodeConfig,
        engine: Engine,
        storage: StorageArea,
        outbox: Outbox,
        interval: float = 1.0,
    ) -> None:
        super().__init__("job publisher", interval)
        self._config = config
        self._engine = engine
        self._storage = storage
        self._outbox = outbox
        self._app = celery_app(config)
        self._noticed: dict[str, float] = {}
        self._broker_down = False

    def reconfigure(self, config: NodeConfig) -> None:
        """Publish the next jobs to the queues of a reloaded configuration's routes (the broker
        stays the one it started with: a reload does not change it)."""
        self._config = config

    def run_once(self, now: float) -> int:
        """Publish what waits; returns how many jobs were published."""
        found = jobs_to_publish(self._engine, self._config.jobs.republish_seconds)
        published = 0
        try:
            for job_id, study_uid in found:
                queue = job_queue(self._config, self._engine, self._storage, study_uid)
                self._app.send_task(RUN_JOB, args=[job_id], queue=queue, retry=False)
                published += 1
            for destination in self._outbox.due_destinations(now):
                if self._noticed.get(destination, 0.0) <= now - DELIVERY_NOTICE_SECONDS:
                    self._app.send_task(
                        DELIVER, args=[destination], queue=OUTBOX_QUEUE, retry=False
                    )
                    self._noticed[destination] = now
        except Exception as error:  # the broker is down or refuses: the rows wait
            not_published(self._engine, [job_id for job_id, _ in found[published:]])
            if not self._broker_down:
                log.error(
                    "broker unavailable (%s): %d job(s) wait in the index, published when it "
                    "is back",
                    error,
                    len(found) - published,
                )
            self._broker_down = True
            return published
        if self._broker_down:
            log.info("broker available again: publishing jobs")
            self._broker_down = False
        if published:
            log.info("%d job(s) published", published)
        return published
