"""The durable queue: each object to deliver is a file in the outgoing area and a row in the
index's outbox table, written in one step, so nothing queued is lost by a restart.

A destination that is down is retried with a growing delay (capped), forever; one that refuses
an object (a failure status) is retried a few times, then the row is marked failed with the
answer, for an operator to look at and retry. A refusal the destination would repeat (a FHIR
server's 4xx) is final at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Engine

from ..config import NodeConfig, OutboxConfig
from ..index.outbox import OutboxTable
from ..index.rows import OutboxRow
from ..index.schema import OUTBOX_FAILED, OUTBOX_SENT
from ..store.storage import StorageArea

log = logging.getLogger(__name__)

#: the most rows one round of the sender takes
BATCH = 200
#: how long rows a sender took (celery engine) wait for its outcome before another may take
#: them: far longer than a batch takes, unless the sender died
HOLD_SECONDS = 600.0

__all__ = ["BATCH", "Outbox", "OutboxRow", "open_outbox", "retry_delay"]


def open_outbox(config: NodeConfig, engine: Engine) -> Outbox:
    """The outbox, its files in an area apart from the stored instances (never indexed)."""
    return Outbox(engine, StorageArea(config.storage.path / "outgoing"), config.outbox)


def retry_delay(policy: OutboxConfig, attempts: int) -> float:
    delay = policy.first_retry_seconds * 2 ** min(max(attempts - 1, 0), 32)
    return min(delay, policy.max_retry_seconds)


class Outbox:
    """The outbox rows and the outgoing files they name."""

    def __init__(self, engine: Engine, area: StorageArea, policy: OutboxConfig) -> None:
        self.engine = engine
        self.area = area
        self.policy = policy
        self.table = OutboxTable(engine)

    def queued(self, destination: str, sop_instance_uid: str) -> bool:
        return self.table.queued(destination, sop_instance_uid)

    def enqueue(
        self, destination: str, sop_instance_uid: str, chunks: list[bytes], job_id: int | None
    ) -> bool:
        """Write the object durably and queue it; False (nothing written) if already queued."""
        relative = self.area.write(chunks)
        self.area.sync(relative)
        added = self.table.add(destination, sop_instance_uid, relative, job_id)
        if not added:
            self.area.remove(relative)
        return added

    def rows(self, state: str | None = None, limit: int | None = None) -> list[OutboxRow]:
        return self.table.rows(state, limit)

    def counts(self) -> dict[str, dict[str, int]]:
        """Rows by destination and state, e.g. ``{"pacs": {"sent": 12, "pending": 2}}``."""
        return self.table.counts()

    def waiting(self, limit: int) -> list[OutboxRow]:
        """Rows not delivered that were tried at least once: what an operator looks at."""
        return self.table.waiting(limit)

    def due(self, now: float) -> list[OutboxRow]:
        return self.table.due(now, BATCH)

    def take_due(self, now: float, destination: str) -> list[OutboxRow]:
        """Due rows of ``destination`` for this sender alone (several senders share the
        outbox in the celery engine)."""
        return self.table.take_due(now, destination, BATCH, HOLD_SECONDS)

    def due_destinations(self, now: float) -> list[str]:
        return self.table.due_destinations(now)

    def read(self, row: OutboxRow) -> bytes:
        """The object's bytes, as queued."""
        return self.area.path(row.path).read_bytes()

    def delivered(self, row: OutboxRow) -> None:
        self.table.update(row.id, state=OUTBOX_SENT, attempts=row.attempts + 1, last_error="")
        self.area.remove(row.path)

    def not_delivered(
        self, row: OutboxRow, error: str, now: float, refused: bool, final: bool = False
    ) -> None:
        """Count a failed try: retried later, unless the destination refused the object
        ``max_refusals`` times, or once with a ``final`` verdict (it would refuse it again; the
        caller logged why)."""
        attempts = row.attempts + 1
        if refused and (final or attempts >= self.policy.max_refusals):
            self.table.update(row.id, state=OUTBOX_FAILED, attempts=attempts, last_error=error)
            if final:
                return
            log.error(
                "outbox: %s refused object %d %d times, giving up: %s",
                row.destination,
                row.id,
                attempts,
                error,
            )
            return
        self.table.update(
            row.id,
            attempts=attempts,
            last_error=error,
            next_attempt_at=now + retry_delay(self.policy, attempts),
        )

    def retry(self, ids: Sequence[int] | None = None) -> int:
        """Rows not delivered (these, or all), failed or waiting for their next try, due now
        (an operator who fixed the peer need not wait out the backoff); returns how many."""
        return self.table.retry(ids)

    def recover(self) -> None:
        """At start: drop outgoing files no row names (written, then interrupted before queued)."""
        self.area.prepare()
        wanted = self.table.paths_not_sent()
        for relative in self.area.files_changed_since(0):
            if relative not in wanted:
                self.area.remove(relative)
