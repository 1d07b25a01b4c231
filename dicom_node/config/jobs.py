"""The `jobs` section: where jobs and deliveries run (the node's own process pool, or Celery
workers on other hosts) and how the Celery engine recovers from a lost message."""

from __future__ import annotations

from enum import StrEnum
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .secrets import url_password


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
    #: the broker's password, kept out of ``broker_url`` (give ``broker_password_file`` or
    #: ``broker_password_env``): put into the URL only when the node connects
    broker_password: str | None = Field(default=None, repr=False)
    #: a job published this long ago and still not done is published again: a broker that
    #: restarted empty, or a worker killed where the broker keeps no unacknowledged message
    republish_seconds: float = Field(default=300.0, gt=0)
    #: Redis: a message taken by a worker that died is delivered again after this long
    #: (RabbitMQ does so at once, when the worker's connection closes)
    visibility_timeout_seconds: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _one_broker_password(self) -> JobsConfig:
        if self.broker_password is not None:
            if not self.broker_url:
                raise ValueError("jobs.broker_password: give jobs.broker_url too")
            if url_password(self.broker_url):
                raise ValueError(
                    "jobs.broker_password: jobs.broker_url carries a password already; "
                    "leave it out of the URL"
                )
        return self

    @property
    def broker_connection_url(self) -> str | None:
        """``broker_url`` with ``broker_password`` in it: what Celery connects with, never
        shown or logged (Celery and kombu mask it in what they print)."""
        if self.broker_url is None or self.broker_password is None:
            return self.broker_url
        parts = urlsplit(self.broker_url)
        user, _, host = parts.netloc.rpartition("@")
        netloc = f"{user}:{quote(self.broker_password, safe='')}@{host}"
        return urlunsplit(parts._replace(netloc=netloc))
