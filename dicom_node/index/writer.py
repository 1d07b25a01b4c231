"""Group commit of new instances into the index.

Association threads hand their rows to one committer thread, which writes every row waiting
at that moment in a single transaction and then wakes each sender. Each C-STORE is still
answered only after its own row is committed, but concurrent stores share one commit (and one
fsync of the database journal) instead of queueing for the write lock one by one.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import Connection, Engine, bindparam, select, update

from ..config import DuplicatePolicy
from ..received import InstanceAttributes
from .database import dialect_insert
from .removal import remove_instance
from .schema import STUDY_RECEIVING, instances, series, studies

log = logging.getLogger(__name__)

_MAX_BATCH = 256
_MAX_KNOWN_SERIES = 10_000


class Outcome(Enum):
    STORED = "stored"
    DUPLICATE_KEPT = "duplicate_kept"  # the first copy stays; the new file must be dropped
    DUPLICATE_REJECTED = "duplicate_rejected"
    REPLACED = "replaced"  # the new copy took the old one's place; the old file must go


@dataclass(frozen=True)
class NewInstance:
    attributes: InstanceAttributes
    transfer_syntax_uid: str
    path: str
    size: int
    calling_ae_title: str
    received_at: float


@dataclass(frozen=True)
class CommitResult:
    outcome: Outcome
    replaced_path: str | None = None


class IndexWriter:
    """The committer thread of one process; `commit` blocks until the row is durable."""

    def __init__(
        self,
        engine: Engine,
        duplicates: DuplicatePolicy,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._duplicates = duplicates
        self._insert = dialect_insert(engine)
        self._queue: queue.Queue[tuple[NewInstance, Future] | None] = queue.Queue()
        self._on_batch = on_batch
        # Series (and so their studies) already in the index: a series' later instances skip
        # two inserts. Cleared whenever rows may have gone (a failed batch, a retraction).
        self._known_series: set[str] = set()
        self._prepare_statements()
        self._thread = threading.Thread(target=self._run, name="index-writer", daemon=True)
        self._thread.start()

    def submit(self, item: NewInstance) -> Future[CommitResult]:
        """Queue the row; the future resolves once it is committed (or failed)."""
        future: Future[CommitResult] = Future()
        self._queue.put((item, future))
        return future

    def commit(self, item: NewInstance) -> CommitResult:
        return self.submit(item).result()

    def retract(self, item: NewInstance) -> None:
        """Take back a committed row whose file could not be made durable."""
        with self._engine.begin() as connection:
            remove_instance(connection, item.attributes.sop_instance_uid, item.path)
        self._known_series.clear()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < _MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit_batch(batch)
            if stop:
                return

    def _commit_batch(self, batch: list[tuple[NewInstance, Future]]) -> None:
        try:
            with self._engine.begin() as connection:
                results = [self._write(connection, item) for item, _ in batch]
        except Exception as error:
            self._known_series.clear()
            if len(batch) == 1:
                log.error("index commit failed: %s", error)
                batch[0][1].set_exception(error)
                return
            # One bad row must not fail its neighbours: retry them one by one.
            for pair in batch:
                self._commit_batch([pair])
            return
        if len(self._known_series) > _MAX_KNOWN_SERIES:
            self._known_series.clear()
        self._known_series.update(item.attributes.series_instance_uid for item, _ in batch)
        if self._on_batch:
            self._on_batch(len(batch))
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)

    def _prepare_statements(self) -> None:
        # Built once: compiling a fresh INSERT per row costs more than the row itself.
        insert = self._insert
        self._study_statement = insert(studies).on_conflict_do_nothing(
            index_elements=["study_instance_uid"]
        )
        self._series_statement = insert(series).on_conflict_do_nothing(
            index_elements=["series_instance_uid"]
        )
        # RETURNING tells a new row from a conflict on both SQLite and PostgreSQL
        # (rowcount of an ON CONFLICT DO NOTHING insert is not reliable across drivers).
        self._instance_statement = (
            insert(instances)
            .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
            .returning(instances.c.sop_instance_uid)
        )
        self._touch_study = (
            update(studies)
            .where(studies.c.study_instance_uid == bindparam("uid"))
            .values(state=STUDY_RECEIVING, last_received_at=bindparam("at"))
        )

    def _write_study_and_series(self, connection: Connection, item: NewInstance) -> None:
        a = item.attributes
        connection.execute(
            self._study_statement,
            dict(
                study_instance_uid=a.study_instance_uid,
                patient_id=a.patient_id,
                issuer_of_patient_id=a.issuer_of_patient_id,
                patient_name=a.patient_name,
                patient_birth_date=a.patient_birth_date,
                patient_sex=a.patient_sex,
                study_date=a.study_date,
                study_time=a.study_time,
                accession_number=a.accession_number,
                study_id=a.study_id,
                study_description=a.study_description,
                referring_physician_name=a.referring_physician_name,
                state=STUDY_RECEIVING,
                last_received_at=item.received_at,
            ),
        )
        connection.execute(
            self._series_statement,
            dict(
                series_instance_uid=a.series_instance_uid,
                study_instance_uid=a.study_instance_uid,
                modality=a.modality,
                series_number=a.series_number,
                series_description=a.series_description,
                body_part_examined=a.body_part_examined,
                series_date=a.series_date,
                series_time=a.series_time,
            ),
        )

    def _write(self, connection: Connection, item: NewInstance) -> CommitResult:
        a = item.attributes
        if a.series_instance_uid not in self._known_series:
            self._write_study_and_series(connection, item)
        row = dict(
            sop_instance_uid=a.sop_instance_uid,
            series_instance_uid=a.series_instance_uid,
            sop_class_uid=a.sop_class_uid,
            instance_number=a.instance_number,
            transfer_syntax_uid=item.transfer_syntax_uid,
            path=item.path,
            size=item.size,
            calling_ae_title=item.calling_ae_title,
            received_at=item.received_at,
        )
        inserted = connection.execute(self._instance_statement, row).first() is not None
        if inserted:
            result = CommitResult(Outcome.STORED)
        elif self._duplicates is DuplicatePolicy.REPLACE:
            old_path = connection.execute(
                select(instances.c.path).where(instances.c.sop_instance_uid == a.sop_instance_uid)
            ).scalar_one()
            connection.execute(
                update(instances)
                .where(instances.c.sop_instance_uid == a.sop_instance_uid)
                .values(**row)
            )
            result = CommitResult(Outcome.REPLACED, replaced_path=old_path)
        elif self._duplicates is DuplicatePolicy.REJECT:
            return CommitResult(Outcome.DUPLICATE_REJECTED)
        else:
            return CommitResult(Outcome.DUPLICATE_KEPT)
        # New content: the study is receiving again, whatever its state was.
        connection.execute(self._touch_study, {"uid": a.study_instance_uid, "at": item.received_at})
        return result
