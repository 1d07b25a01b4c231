"""The index's pooled PostgreSQL connections after the server closed them (a restart, an
administrator's `pg_terminate_backend`, an idle timeout): the next C-FIND, QIDO-RS search or
index write gets a fresh connection, not the dead one's error."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, func, insert, select, text

from dicom_node.index.database import open_engine, reading_engine
from dicom_node.index.schema import studies
from tests.conftest import POSTGRES_ADMIN_URL, new_database


@pytest.fixture
def engine(tmp_path) -> Iterator[Engine]:
    with new_database("postgresql", tmp_path) as url:
        engine = open_engine(url)
        yield engine
        engine.dispose()


def _backends(admin: Engine, database: str) -> list[int]:
    with admin.connect() as connection:
        return list(
            connection.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :name"),
                {"name": database},
            ).scalars()
        )


def _terminate_every_connection(engine: Engine) -> None:
    """What a PostgreSQL restart does to the pool: every backend of the index's database ends,
    each having told its client so."""
    database = engine.url.database
    assert database is not None
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        pids = _backends(admin, database)
        assert pids, "the pool should hold idle connections"
        with admin.connect() as connection:
            for pid in pids:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        deadline = time.monotonic() + 10
        while _backends(admin, database):
            assert time.monotonic() < deadline, "the backends did not end"
            time.sleep(0.05)
    finally:
        admin.dispose()


def _fill_the_pool(engine: Engine, connections: int) -> None:
    held = [engine.connect() for _ in range(connections)]
    for connection in held:
        connection.execute(select(1)).all()
    for connection in held:
        connection.close()


def test_reads_and_writes_after_the_server_closed_every_pooled_connection(engine):
    _fill_the_pool(engine, 3)
    _terminate_every_connection(engine)

    for _ in range(3):  # each pooled connection is found closed in turn
        with reading_engine(engine).connect() as connection:
            assert connection.execute(select(func.count()).select_from(studies)).scalar() == 0
    with engine.begin() as connection:
        connection.execute(
            insert(studies).values(
                study_instance_uid="1.2.3", state="complete", last_received_at=time.time()
            )
        )
    with engine.connect() as connection:
        assert connection.execute(select(studies.c.study_instance_uid)).scalars().all() == ["1.2.3"]


def test_live_pooled_connections_are_kept(engine):
    _fill_the_pool(engine, 3)
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        before = set(_backends(admin, engine.url.database or ""))
        for _ in range(5):
            for reader in (engine, reading_engine(engine)):
                with reader.connect() as connection:
                    connection.execute(select(1)).all()
        assert set(_backends(admin, engine.url.database or "")) == before
    finally:
        admin.dispose()
