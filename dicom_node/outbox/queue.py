"""The outbox: objects to send to DICOM peers, and reports to the FHIR server (destination
``fhir``), retried until each destination acknowledged them.

A row is written in the same step that puts the file in the outgoing area, so nothing queued is
lost by a restart; the sender thread takes due rows, sends them with one association per peer,
and removes a file once it was delivered. A peer that is down is retried with a growing delay
(capped), forever; a peer that refuses an object (a failure status) is retried a few times, then
the row is marked failed with the peer's answer, for an operator to look at and retry. The FHIR
server's refusal (a 4xx answer) is final at once: the same Bundle would be refused again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, and_, func, select, update

from fhir_bridge.client import FhirClient, Verdict

from ..config import FHIR_DESTINATION, ConfigError, NodeConfig, OutboxConfig
from ..dimse.scu import NO_ANSWER, PeerUnavailable, send
from ..index.database import dialect_insert
from ..index.schema import OUTBOX_FAILED, OUTBOX_PENDING, OUTBOX_SENT, outbox
from ..periodic import PeriodicThread
from ..store.storage import StorageArea

log = logging.getLogger(__name__)

BATCH = 200


def open_outbox(config: NodeConfig, engine: Engine) -> Outbox:
    """The outbox, its files in an area apart from the stored instances (never indexed)."""
    return Outbox(engine, StorageArea(config.storage.path / "outgoing"), config.outbox)


def retry_delay(policy: OutboxConfig, attempts: int) -> float:
    delay = policy.first_retry_seconds * 2 ** min(max(attempts - 1, 0), 32)
    return min(delay, policy.max_retry_seconds)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    destination: str
    sop_instance_uid: str
    path: str
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str


class Outbox:
    """The outbox table and the outgoing files it names."""

    def __init__(self, engine: Engine, area: StorageArea, policy: OutboxConfig) -> None:
        self.engine = engine
        self.area = area
        self.policy = policy
        self._insert = dialect_insert(engine)

    def queued(self, destination: str, sop_instance_uid: str) -> bool:
        with self.engine.connect() as connection:
            return (
                connection.execute(
                    select(outbox.c.id).where(
                        and_(
                            outbox.c.destination == destination,
                            outbox.c.sop_instance_uid == sop_instance_uid,
                        )
                    )
                ).first()
                is not None
            )

    def enqueue(
        self, destination: str, sop_instance_uid: str, chunks: list[bytes], job_id: int | None
    ) -> bool:
        """Write the object durably and queue it; False (nothing written) if already queued."""
        relative = self.area.write(chunks)
        self.area.sync(relative)
        now = time.time()
        with self.engine.begin() as connection:
            added = connection.execute(
                self._insert(outbox)
                .values(
                    destination=destination,
                    sop_instance_uid=sop_instance_uid,
                    path=relative,
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
        if not added:
            self.area.remove(relative)
        return bool(added)

    def _select(self, condition, limit: int | None) -> list[OutboxRow]:
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
        condition = and_(outbox.c.state != OUTBOX_SENT, outbox.c.attempts > 0)
        return self._select(condition, limit)

    def due(self, now: float) -> list[OutboxRow]:
        condition = and_(outbox.c.state == OUTBOX_PENDING, outbox.c.next_attempt_at <= now)
        return self._select(condition, BATCH)

    def _set(self, row_id: int, **values) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(outbox).where(outbox.c.id == row_id).values(updated_at=time.time(), **values)
            )

    def delivered(self, row: OutboxRow) -> None:
        self._set(row.id, state=OUTBOX_SENT, attempts=row.attempts + 1, last_error="")
        self.area.remove(row.path)

    def not_delivered(
        self, row: OutboxRow, error: str, now: float, refused: bool, final: bool = False
    ) -> None:
        """Count a failed try: retried later, unless the destination refused the object
        ``max_refusals`` times, or once with a ``final`` verdict (it would refuse it again; the
        caller logged why)."""
        attempts = row.attempts + 1
        if refused and (final or attempts >= self.policy.max_refusals):
            self._set(row.id, state=OUTBOX_FAILED, attempts=attempts, last_error=error)
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
        self._set(
            row.id,
            attempts=attempts,
            last_error=error,
            next_attempt_at=now + retry_delay(self.policy, attempts),
        )

    def retry(self, ids: Sequence[int] | None = None) -> int:
        """Failed rows (these, or all) back to pending, due now; returns how many."""
        condition = outbox.c.state == OUTBOX_FAILED
        if ids is not None:
            condition = and_(condition, outbox.c.id.in_(ids))
        with self.engine.begin() as connection:
            return connection.execute(
                update(outbox)
                .where(condition)
                .values(
                    state=OUTBOX_PENDING,
                    attempts=0,
                    next_attempt_at=time.time(),
                    updated_at=time.time(),
                )
            ).rowcount

    def recover(self) -> None:
        """At start: drop outgoing files no row names (written, then interrupted before queued)."""
        self.area.prepare()
        with self.engine.connect() as connection:
            wanted = set(
                connection.execute(
                    select(outbox.c.path).where(outbox.c.state != OUTBOX_SENT)
                ).scalars()
            )
        for relative in self.area.files_changed_since(0):
            if relative not in wanted:
                self.area.remove(relative)


class OutboxSender(PeriodicThread):
    """Sends due outbox rows: one association per DICOM destination per round, and FHIR reports
    one transaction each."""

    def __init__(
        self,
        config: NodeConfig,
        box: Outbox,
        fhir: FhirClient | None = None,
        interval: float = 1.0,
    ) -> None:
        super().__init__("outbox", interval)
        self._config = config
        self._outbox = box
        self._fhir = fhir

    def run_once(self, now: float) -> int:
        """Send what is due at ``now``; returns how many objects were delivered."""
        by_destination: dict[str, list[OutboxRow]] = {}
        for row in self._outbox.due(now):
            by_destination.setdefault(row.destination, []).append(row)
        delivered = 0
        for destination, rows in by_destination.items():
            if destination == FHIR_DESTINATION:
                delivered += self._post_reports(rows, now)
            else:
                delivered += self._send(destination, rows, now)
        return delivered

    def _post_reports(self, rows: list[OutboxRow], now: float) -> int:
        """One transaction per report; once the server is found unavailable, the round's other
        reports wait without being tried (so a server that is down does not hold up the DICOM
        deliveries behind them)."""
        delivered = 0
        unavailable = None if self._fhir is not None else "fhir.base_url is not set"
        for row in rows:
            if unavailable is not None:
                self._outbox.not_delivered(row, unavailable, now, refused=False)
                continue
            outcome = self._fhir.post_transaction(self._outbox.area.path(row.path).read_bytes())
            if outcome.verdict == Verdict.DELIVERED:
                self._outbox.delivered(row)
                delivered += 1
                continue
            refused = outcome.verdict == Verdict.REFUSED
            # The log gets the brief answer: a refusal may quote the patient's data, which stays
            # in the row (``dicom-node outbox list``) and at DEBUG.
            if refused:
                log.error("outbox: the FHIR server refused report %d: %s", row.id, outcome.brief)
            else:
                log.warning("outbox: reports wait for the FHIR server: %s", outcome.brief)
                unavailable = outcome.message
            log.debug("outbox: report %d: %s", row.id, outcome.message)
            self._outbox.not_delivered(row, outcome.message, now, refused=refused, final=refused)
        if delivered:
            log.info("outbox: %d report(s) delivered to the FHIR server", delivered)
        return delivered

    def _send(self, destination: str, rows: list[OutboxRow], now: float) -> int:
        paths = {str(self._outbox.area.path(row.path)): row for row in rows}
        try:
            report = send(self._config, destination, [self._outbox.area.path(r.path) for r in rows])
        except (PeerUnavailable, ConfigError) as error:  # down, or no longer configured
            log.warning("outbox: %d object(s) wait for %s: %s", len(rows), destination, error)
            for row in rows:
                self._outbox.not_delivered(row, str(error), now, refused=False)
            return 0
        failed = dict(report.failed)
        for path, row in paths.items():
            if path in failed:
                # The association broke off: that is not the peer's verdict on the object.
                refused = not failed[path].startswith(NO_ANSWER)
                self._outbox.not_delivered(row, failed[path], now, refused=refused)
            else:
                self._outbox.delivered(row)
        sent = len(paths) - len(failed)
        log.info("outbox: %d object(s) delivered to %s, %d not", sent, destination, len(failed))
        return sent
