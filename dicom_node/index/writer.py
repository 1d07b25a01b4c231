"""Group commit of new instances into the index.

Association threads hand their rows to one committer thread, which writes every row waiting
at that moment in a single transaction, one multi-row statement per table, and then wakes each
sender. Each C-STORE is still answered only after its own row is committed, but concurrent
stores share one commit (and one flush of the database journal) instead of queueing for the
write lock one by one.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, fields
from enum import Enum
from multiprocessing.synchronize import Lock as LockType
from operator import itemgetter

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Engine,
    Table,
    bindparam,
    case,
    select,
    update,
)

from ..config import DuplicatePolicy
from .database import dialect_insert
from .folding import folded
from .removal import remove_instance
from .rows import InstanceAttributes
from .schema import FOLDED_NAMES, STUDY_COMPLETE, STUDY_RECEIVING, instances, series, studies

log = logging.getLogger(__name__)

_MAX_BATCH = 256
_MAX_KNOWN_SERIES = 10_000
#: A study's last_received_at is refreshed at most this often by one writer (one statement
#: per instance saved); the stability monitor waits this much longer to make up for it.
STUDY_TOUCH_INTERVAL_SECONDS = 1.0
_TURN_TIMEOUT_SECONDS = 5.0


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
    """The committer thread of one process; `submit` returns a future resolved once the row
    is durable."""

    def __init__(
        self,
        engine: Engine,
        duplicates: DuplicatePolicy,
        on_batch: Callable[[int], None] | None = None,
        lock: LockType | None = None,
    ) -> None:
        self._engine = engine
        self._duplicates = duplicates
        self._insert = dialect_insert(engine)
        self._queue: queue.Queue[tuple[NewInstance, Future] | None] = queue.Queue()
        self._on_batch = on_batch
        self._lock = lock
        # Series (and so their studies) already in the index: a series' later instances skip
        # two inserts. Cleared whenever rows may have gone (a failed batch, a retraction).
        self._known_series: set[str] = set()
        # Study UID -> the received_at this writer last committed to it.
        self._touched_at: dict[str, float] = {}
        self._open_connection: Connection | None = None
        self._prepare_statements()
        self._thread = threading.Thread(target=self._run, name="index-writer", daemon=True)
        self._thread.start()

    def submit(self, item: NewInstance) -> Future[CommitResult]:
        """Queue the row; the future resolves once it is committed (or failed)."""
        future: Future[CommitResult] = Future()
        self._queue.put((item, future))
        return future

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
            # The batch is taken once this process' turn has come: the rows queued while
            # another receiving process committed join this commit (one flush for all).
            with _commit_turn(self._lock):
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
                self._drop_connection()
                return

    def _commit_batch(self, batch: list[tuple[NewInstance, Future]]) -> None:
        try:
            connection = self._connection()
            with connection.begin():
                results, touched = self._write_batch(connection, [item for item, _ in batch])
        except Exception as error:
            self._drop_connection()
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
            self._touched_at.clear()
        self._known_series.update(item.attributes.series_instance_uid for item, _ in batch)
        self._touched_at.update(touched)
        if self._on_batch:
            self._on_batch(len(batch))
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)

    def _connection(self) -> Connection:
        # One connection for the thread's life: checking one out of the pool per batch
        # cost as much as the rows themselves.
        if self._open_connection is None:
            self._open_connection = self._engine.connect()
        return self._open_connection

    def _drop_connection(self) -> None:
        """After a failure: forget what may have changed and reconnect on the next batch."""
        self._known_series.clear()
        self._touched_at.clear()
        if self._open_connection is not None:
            with contextlib.suppress(Exception):
                self._open_connection.close()
            self._open_connection = None

    def _prepare_statements(self) -> None:
        # Compiled once to the driver's SQL and run with the driver's executemany:
        # SQLAlchemy's per-statement machinery cost more than the rows themselves.
        insert = self._insert
        self._insert_studies = _DriverStatement(
            self._engine,
            insert(studies).on_conflict_do_nothing(index_elements=["study_instance_uid"]),
        )
        self._insert_series = _DriverStatement(
            self._engine,
            insert(series).on_conflict_do_nothing(index_elements=["series_instance_uid"]),
        )
        self._insert_instances = _DriverStatement(
            self._engine,
            insert(instances).on_conflict_do_nothing(index_elements=["sop_instance_uid"]),
        )
        self._touch_studies = _DriverStatement(
            self._engine,
            update(studies)
            .where(studies.c.study_instance_uid == bindparam("uid"))
            .values(state=STUDY_RECEIVING, last_received_at=_latest(bindparam("at"))),
        )

    def _write_batch(
        self, connection: Connection, items: list[NewInstance]
    ) -> tuple[list[CommitResult], dict[str, float]]:
        """Write the batch's rows with one statement per table.

        Returns each item's outcome, and the studies whose last_received_at was refreshed.
        """
        new_series = {
            item.attributes.series_instance_uid: item
            for item in items
            if item.attributes.series_instance_uid not in self._known_series
        }
        if new_series:
            studies_rows = {
                item.attributes.study_instance_uid: _study_row(item) for item in new_series.values()
            }
            self._insert_studies.run(connection, list(studies_rows.values()))
            self._insert_series.run(connection, [_series_row(item) for item in new_series.values()])
        # The first item of each SOP Instance UID is tried as new; any other (the same
        # instance sent twice at once) is a duplicate of it.
        firsts: dict[str, NewInstance] = {}
        for item in items:
            firsts.setdefault(item.attributes.sop_instance_uid, item)
        added = self._insert_instances.run(connection, [_instance_row(i) for i in firsts.values()])
        if added == len(firsts):
            new_paths = {item.path for item in firsts.values()}
        else:  # some were there already: the rows that hold this batch's files are the new ones
            new_paths = set(
                connection.execute(
                    select(instances.c.path).where(instances.c.sop_instance_uid.in_(list(firsts)))
                ).scalars()
            )
        results = [
            CommitResult(Outcome.STORED)
            if item.path in new_paths
            else self._write_duplicate(connection, item)
            for item in items
        ]
        # New content: the study is receiving again, whatever its state was. A study this
        # writer touched less than the interval ago is still receiving (the monitor waits
        # stable_seconds plus the interval), so only its time is left a little behind.
        touched: dict[str, float] = {}
        for item, result in zip(items, results, strict=True):
            if result.outcome in (Outcome.STORED, Outcome.REPLACED):
                uid = item.attributes.study_instance_uid
                at = max(touched.get(uid, 0.0), item.received_at)
                if at - self._touched_at.get(uid, float("-inf")) >= STUDY_TOUCH_INTERVAL_SECONDS:
                    touched[uid] = at
        if touched:
            self._touch_studies.run(
                connection, [{"uid": uid, "at": at} for uid, at in touched.items()]
            )
        return results, touched

    def _write_duplicate(self, connection: Connection, item: NewInstance) -> CommitResult:
        if self._duplicates is DuplicatePolicy.REJECT:
            return CommitResult(Outcome.DUPLICATE_REJECTED)
        if self._duplicates is DuplicatePolicy.KEEP_FIRST:
            return CommitResult(Outcome.DUPLICATE_KEPT)
        uid = item.attributes.sop_instance_uid
        old_path = connection.execute(
            select(instances.c.path).where(instances.c.sop_instance_uid == uid)
        ).scalar_one()
        connection.execute(
            update(instances)
            .where(instances.c.sop_instance_uid == uid)
            .values(**_instance_row(item))
        )
        return CommitResult(Outcome.REPLACED, replaced_path=old_path)


def _latest(at: BindParameter) -> ColumnElement:
    """The later of the study's time and `at`: receiving processes commit out of order, and an
    earlier time written last would let the stability monitor complete a study that another
    process is still receiving (its writer refreshes the time only once per touch interval)."""
    return case((studies.c.last_received_at > at, studies.c.last_received_at), else_=at)


def index_own_instance(engine: Engine, item: NewInstance) -> bool:
    """Commit the rows of an instance this node made (a result) into its study; False when the
    instance is indexed already. Unlike a received instance it leaves the study's state alone:
    a job's own results must not make its study pending again and start another job."""
    insert = dialect_insert(engine)
    with engine.begin() as connection:
        connection.execute(
            insert(studies)
            .values(**_study_row(item, state=STUDY_COMPLETE))
            .on_conflict_do_nothing(index_elements=["study_instance_uid"])
        )
        connection.execute(
            insert(series)
            .values(**_series_row(item))
            .on_conflict_do_nothing(index_elements=["series_instance_uid"])
        )
        added = connection.execute(
            insert(instances)
            .values(**_instance_row(item))
            .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
        ).rowcount
    return bool(added)


def _tuple_getter(names: list[str]) -> Callable[[dict], tuple]:
    getter = itemgetter(*names)
    return getter if len(names) > 1 else lambda row: (getter(row),)


@contextlib.contextmanager
def _commit_turn(lock: LockType | None) -> Iterator[None]:
    """Hold the lock shared by the receiving processes, if any, while committing.

    Bounded: a receiving process killed while holding it must not stop the others, which
    then fall back on the database's own locking.
    """
    held = lock.acquire(timeout=_TURN_TIMEOUT_SECONDS) if lock is not None else False
    try:
        yield
    finally:
        if held and lock is not None:
            lock.release()


class _DriverStatement:
    """A statement compiled once for the engine's driver, run with the driver's executemany."""

    def __init__(self, engine: Engine, statement) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self._sql = compiled.string
        self._in_order = _tuple_getter(compiled.positiontup) if compiled.positional else None
        # Values written into the statement itself (e.g. a state to set).
        self._constants = {k: v for k, v in compiled.params.items() if v is not None}

    def run(self, connection: Connection, rows: list[dict]) -> int:
        """Execute for every row; return the number of rows changed."""
        if self._constants:
            rows = [{**self._constants, **row} for row in rows]
        parameters = rows if self._in_order is None else [self._in_order(row) for row in rows]
        return connection.exec_driver_sql(self._sql, parameters).rowcount


def _columns(table: Table) -> list[tuple[str, bool]]:
    """Each column's name, and whether InstanceAttributes (rather than NewInstance) holds it."""
    attributes = {field.name for field in fields(InstanceAttributes)}
    return [(name, name in attributes) for name in table.columns.keys()]


_COLUMNS = {table.name: _columns(table) for table in (studies, series, instances)}


def _row(table: Table, item: NewInstance, **fixed) -> dict:
    """A row of `table`: each column from `fixed`, the item's attributes, or the item."""
    a = item.attributes
    row = {
        name: getattr(a, name) if in_attributes else getattr(item, name, None)
        for name, in_attributes in _COLUMNS[table.name]
    }
    row.update(fixed)
    return row


def _study_row(item: NewInstance, state: str = STUDY_RECEIVING) -> dict:
    row = _row(studies, item, state=state, last_received_at=item.received_at)
    row.update({column: folded(row[name]) for column, name in FOLDED_NAMES.items()})
    return row


def _series_row(item: NewInstance) -> dict:
    return _row(series, item)


def _instance_row(item: NewInstance) -> dict:
    return _row(instances, item)
