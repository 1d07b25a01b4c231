"""The outbox table: one row per object and destination, with its state, attempts, next try and
the last error. The files the rows name are the outbox package's business, not this one's."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, func, select, update

from .database import dialect_insert
from .rows import OutboxRow
from .schema import OUTBOX_PENDING, OUTBOX_SENT, outbox


class OutboxTable:
    """Rows of deliveries: added once per destination and object, taken when due, updated with
    each try's outcome."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = dialect_insert(engine)

    def queued(self, destination: str, sop_instance_uid: str) -> bool:
        condition = and_(
            outbox.c.destination == destination, outbox.c.sop_instance_uid == sop_instance_uid
        )
        with self.engine.connect() as connection:
            return connection.execute(select(outbox.c.id).where(condition)).first() is not None

    def add(self, destination: str, sop_instance_uid: str, path: str, job_id: int | None) -> bool:
        """A pending row, due now; False (nothing added) if the pair is queued already."""
        now = time.time()
        with self.engine.begin() as connection:
            added = connection.execute(
                self._insert(outbox)
                .values(
                    destination=destination,
                    sop_instance_uid=sop_instance_uid,
                    path=path,
                    job_id=job_id,
                    state=OUTBOX_PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    last_error="",
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing()
            ).rowcount
        return bool(added)

    def _select(self, condition: ColumnElement[bool] | None, limit: int | None) -> list[OutboxRow]:
        statement = select(*(outbox.c[f] for f in OutboxRow.__dataclass_fields__))
        if condition is not None:
            statement = statement.where(condition)
        with self.engine.connect() as connection:
            rows = connection.execute(statement.order_by(outbox.c.id).limit(limit))
            return [OutboxRow(*row) for row in rows]

    def rows(self, state: str | None = None, limit: int | None = None) -> list[OutboxRow]:
        return self._select(outbox.c.state == state if state else None, limit)

    def counts(self) -> dict[str, dict[str, int]]:
        """Rows by destination and state, e.g. ``{"pacs": {"sent": 12, "pending": 2}}``."""
        statement = select(outbox.c.destination, outbox.c.state, func.count()).group_by(
            outbox.c.destination, outbox.c.state
        )
        found: dict[str, dict[str, int]] = {}
        with self.engine.connect() as connection:
            for destination, state, number in connection.execute(statement):
                found.setdefault(destination, {})[state] = number
        return found

    def waiting(self, limit: int) -> list[OutboxRow]:
        """Rows not delivered that were tried at least once: what an operator looks at."""
        return self._select(and_(outbox.c.state != OUTBOX_SENT, outbox.c.attempts > 0), limit)

    def due(self, now: float, limit: int) -> list[OutboxRow]:
        condition = and_(outbox.c.state == OUTBOX_PENDING, outbox.c.next_attempt_at <= now)
        return self._select(condition, limit)

    def take_due(
        self, now: float, destination: str, limit: int, hold_seconds: float
    ) -> list[OutboxRow]:
        """The due rows of ``destination``, taken: not due again for ``hold_seconds``, by which
        time the taker recorded its try, so senders on several hosts never send one object at
        the same time. Rows another sender is taking right now are skipped (PostgreSQL)."""
        chosen = (
            select(outbox.c.id)
            .where(
                and_(
                    outbox.c.destination == destination,
                    outbox.c.state == OUTBOX_PENDING,
                    outbox.c.next_attempt_at <= now,
                )
            )
            .order_by(outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        columns = [outbox.c[f] for f in OutboxRow.__dataclass_fields__]
        with self.engine.begin() as connection:
            taken = connection.execute(
                update(outbox)
                .where(outbox.c.id.in_(chosen))
                .values(next_attempt_at=now + hold_seconds)
                .returning(*columns)
            )
            rows = sorted((OutboxRow(*row) for row in taken), key=lambda row: row.id)
        return rows

    def due_destinations(self, now: float) -> list[str]:
        """The destinations with rows due at ``now``."""
        condition = and_(outbox.c.state == OUTBOX_PENDING, outbox.c.next_attempt_at <= now)
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    select(outbox.c.destination).where(condition).distinct()
                ).scalars()
            )

    def update(self, row_id: int, **values: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(outbox).where(outbox.c.id == row_id).values(updated_at=time.time(), **values)
            )

    def retry(self, ids: Sequence[int] | None = None) -> int:
        """Rows not delivered (these, or all), failed or waiting for their next try: pending,
        due now, their count of tries started again; returns how many."""
        condition = outbox.c.state != OUTBOX_SENT
        if ids is not None:
            condition = and_(condition, outbox.c.id.in_(ids))
        now = time.time()
        with self.engine.begin() as connection:
            return connection.execute(
                update(outbox)
                .where(condition)
                .values(state=OUTBOX_PENDING, attempts=0, next_attempt_at=now, updated_at=now)
            ).rowcount

    def paths_not_sent(self) -> set[str]:
        """The files that rows still need."""
        with self.engine.connect() as connection:
            return set(
                connection.execute(
                    select(outbox.c.path).where(outbox.c.state != OUTBOX_SENT)
                ).scalars()
            )
