"""Opening the index database, with the settings that make concurrent writers safe."""

from __future__ import annotations

import os
import select as sockets
from pathlib import Path

from sqlalchemy import Engine, bindparam, create_engine, event, inspect, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

from .folding import folded
from .schema import FOLDED_NAMES, metadata, studies

_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers (C-FIND, HTTP) run beside the writer; FULL makes each commit
    # durable before a C-STORE is acknowledged; busy_timeout lets several receiving
    # processes take turns at the write lock instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _closed_by_the_server(dbapi_connection, _record, _proxy) -> None:
    """Discard a pooled PostgreSQL connection the server has spoken on since it was idle.

    An idle connection gets something from the server only when it is going away: a restart, an
    administrator's `pg_terminate_backend` or an idle timeout send an error and close the socket
    (the node uses no LISTEN). Looking at the socket costs no round trip, where SQLAlchemy's
    `pool_pre_ping` sends a query at every checkout, a seventh of a millisecond added to each
    C-FIND, QIDO-RS search and index write. The pool then opens a fresh connection in its place
    (SQLAlchemy retries on `DisconnectionError`)."""
    readable, _, _ = sockets.select([dbapi_connection.fileno()], [], [], 0)
    if readable:
        raise DisconnectionError("the index database closed this pooled connection")


def _private_sqlite_files(url: str) -> None:
    """Make the SQLite index readable by the node's user only: it holds patient data and the
    pseudonym map. SQLite creates the file with the process umask (often 0644) and gives its
    -wal, -shm and -journal files, made later, the mode of the main file; so the main file is
    created 0600 before SQLite opens it, and the files of an older index are narrowed."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if path.parent.is_dir() and not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for file in (path, *(Path(f"{path}{suffix}") for suffix in _SQLITE_COMPANIONS)):
        if file.exists():
            file.chmod(0o600)


def open_engine(url: str, create: bool = True) -> Engine:
    """An engine on the index at `url`, with the tables created when `create`."""
    if url.startswith("sqlite"):
        _private_sqlite_files(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_size=8, max_overflow=16)
        event.listen(engine, "checkout", _closed_by_the_server)
    if create:
        metadata.create_all(engine, checkfirst=True)
        _add_new_columns(engine)
        _fold_names(engine)
        _add_new_indexes(engine)
    return engine


def reading_engine(engine: Engine) -> Engine:
    """`engine` for queries that only read (C-FIND, QIDO-RS, WADO-RS, retrieves): on PostgreSQL
    its connections run each statement on its own (autocommit), sharing `engine`'s pool. A
    read-only transaction there only adds a BEGIN before the first statement and a ROLLBACK at
    the connection's return, two round trips of the four or five a QIDO-RS search makes; under
    READ COMMITTED each statement takes its own snapshot either way. SQLite's driver begins no
    transaction for a SELECT: its engine is returned as it is."""
    if engine.dialect.name != "postgresql":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _add_new_columns(engine: Engine) -> None:
    """Add the nullable columns a newer version declares to an index made by an older one."""
    inspector = inspect(engine)
    with engine.begin() as connection:
        for table in metadata.sorted_tables:
            present = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present and column.nullable:
                    kind = column.type.compile(dialect=engine.dialect)
                    connection.execute(
                        text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
                    )


def _add_new_indexes(engine: Engine) -> None:
    """Create the indexes a newer version declares on the tables of an older index."""
    inspector = inspect(engine)
    with engine.begin() as connection:
        for table in metadata.sorted_tables:
            present = {index["name"] for index in inspector.get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in present:
                    index.create(connection)


def _fold_names(engine: Engine) -> None:
    """Fill the folded names of studies indexed by a version that did not keep them."""
    names = [studies.c[name] for name in FOLDED_NAMES.values()]
    with engine.begin() as connection:
        rows = connection.execute(
            select(studies.c.study_instance_uid, *names).where(
                or_(*(studies.c[column].is_(None) for column in FOLDED_NAMES))
            )
        ).all()
        if rows:
            connection.execute(
                update(studies).where(studies.c.study_instance_uid == bindparam("uid")),
                [
                    {
                        "uid": row.study_instance_uid,
                        **{
                            column: folded(row._mapping[name])
                            for column, name in FOLDED_NAMES.items()
                        },
                    }
                    for row in rows
                ],
            )


def dialect_insert(engine: Engine):
    """The dialect's INSERT construct, which knows ON CONFLICT (SQLite and PostgreSQL)."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert
    if engine.dialect.name == "sqlite":
        return sqlite.insert
    raise ValueError(
        f"unsupported index database {engine.dialect.name!r}: use SQLite or PostgreSQL"
    )
