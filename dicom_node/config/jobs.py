"""The `jobs` section: where jobs and deliveries run (the node's own process pool, or Celery
workers on other hosts) and how the Celery engine recovers from a lost message."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class JobEngine(StrEnum):
    """Where jobs and deliveries run: in the node's own process pool, or on Celery workers."""

    LOCAL = "local"
    CELERY = "celery"


class JobsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: worker processes running jobs (de-identification, models) beside the receivers
    workers: int = Field(default=1, ge=1, le=64)
    #: ``celery``: `serve` only publishes jobs; `dicom-node worker` processes run them
    engine: JobEngine = JobEngine.LOCAL
    #: the Celery broker (celery engine), e.g. ``amqp://guest:guest@127.0.0.1:5672//`` or
    #: ``redis://127.0.0.1:6379/0``
    broker_url: str | None = None
    #: a job published this long ago and still not done is published again: a broker that
    #: restarted empty, or a worker killed where the broker keeps no unacknowledged message
    republish_seconds: float = Field(default=300.0, gt=0)
    #: Redis: a message taken by a worker that died is delivered again after this long
    #: (RabbitMQ does so at once, when the worker's connection closes)
    visibility_timeout_seconds: float = Field(default=3600.0, gt=0)
