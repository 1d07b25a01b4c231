"""The Celery application of the celery engine: broker settings, queue and task names. Both
sides build it from the configuration: the receivers (`serve`) publish with it, the workers
(`dicom-node worker`) consume with it (their tasks: `celery_tasks`).

A message only says "look at job N" (or "send what is due for destination D"): the job row in
the index is the truth, so a message lost with a broker, or delivered twice, costs nothing but a
republish or a no-op. Messages are acknowledged after the task ran (``acks_late``) and given
back when the worker process dies under them (``reject_on_worker_lost``): RabbitMQ delivers them
again when the worker's connection closes, Redis after ``jobs.visibility_timeout_seconds``.
"""

from __future__ import annotations

from celery import Celery

from ..config import NodeConfig

#: the queue of study jobs, unless a route names another (``inference.routes[].queue``)
JOBS_QUEUE = "jobs"
#: the queue of deliveries (outbox)
OUTBOX_QUEUE = "outbox"
RUN_JOB = "dicom_node.run_job"
DELIVER = "dicom_node.deliver"
#: a publish to a broker that does not answer gives up after this long: the job row waits
PUBLISH_TIMEOUT_SECONDS = 3.0


def celery_app(config: NodeConfig) -> Celery:
    """The node's Celery application on ``jobs.broker_url`` (with ``jobs.broker_password``)."""
    app = Celery("dicom_node", broker=config.jobs.broker_connection_url, set_as_current=False)
    app.conf.update(
        task_default_queue=JOBS_QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # one message at a time per worker process: a long CT job never holds others back
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        broker_transport_options={
            "visibility_timeout": config.jobs.visibility_timeout_seconds,
            "max_retries": 1,
        },
        broker_connection_timeout=PUBLISH_TIMEOUT_SECONDS,
        broker_connection_retry_on_startup=True,
        # a worker waits for a broker that is down, however long (Celery's default gives up
        # after 100 tries, ending the worker)
        broker_connection_max_retries=None,
        task_publish_retry=False,
    )
    return app
