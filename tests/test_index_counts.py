"""The counts and modalities C-FIND and QIDO-RS compute, on SQLite and PostgreSQL, and the
engine that reads them (autocommit on PostgreSQL: no transaction left open by a read)."""

from __future__ import annotations

import time

import pytest
from pydicom.uid import CTImageStorage as CT_IMAGE
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select

from dicom_node.index.counts import StudyCounts, study_counts
from dicom_node.index.database import open_engine, reading_engine
from dicom_node.index.schema import instances, series, studies

#: modality values a crafted file could carry: the separators of the SQL aggregates' text forms,
#: a JSON quote, non-ASCII
ODD_MODALITIES = ["X,Y", 'A"\\B', "ÜS"]


def _study(uid: str) -> dict:
    return {
        "study_instance_uid": uid,
        "patient_id": f"P{uid}",
        "patient_name": "DOE^JANE",
        "state": "complete",
        "last_received_at": time.time(),
    }


def _series(uid: str, study: str, modality: str) -> dict:
    return {"series_instance_uid": uid, "study_instance_uid": study, "modality": modality}


def _instances(series_uid: str, count: int) -> list[dict]:
    return [
        {
            "sop_instance_uid": f"{series_uid}.{number}",
            "series_instance_uid": series_uid,
            "sop_class_uid": CT_IMAGE,
            "transfer_syntax_uid": ExplicitVRLittleEndian,
            "path": f"x/{series_uid}.{number}",
            "size": 1,
            "received_at": time.time(),
        }
        for number in range(count)
    ]


@pytest.fixture
def engine(database_url):
    engine = open_engine(database_url)
    with engine.begin() as connection:
        connection.execute(studies.insert(), [_study(uid) for uid in ("1.1", "1.2", "1.3")])
        connection.execute(
            series.insert(),
            [
                _series("1.1.1", "1.1", "CT"),
                _series("1.1.2", "1.1", "CT"),
                _series("1.1.3", "1.1", "SR"),
                _series("1.1.4", "1.1", ""),
                *(
                    _series(f"1.2.{number}", "1.2", modality)
                    for number, modality in enumerate(ODD_MODALITIES)
                ),
            ],
        )
        rows = [*_instances("1.1.1", 3), *_instances("1.1.2", 2), *_instances("1.1.4", 1)]
        rows += _instances("1.2.0", 1)
        connection.execute(instances.insert(), rows)
    yield engine
    engine.dispose()


def test_study_counts_hold_every_series_instance_and_distinct_modality(engine):
    found = study_counts(reading_engine(engine), ["1.1", "1.2", "1.3", "9.9"])
    assert found == {
        # series without instances count as series; empty modalities are left out
        "1.1": StudyCounts(4, 6, ["CT", "SR"], []),
        "1.2": StudyCounts(3, 1, sorted(ODD_MODALITIES), []),
    }  # a study without series, and an unknown one, have no counts


def test_study_counts_with_sop_classes_and_in_chunks(engine, monkeypatch):
    monkeypatch.setattr("dicom_node.index.counts._CHUNK", 1)
    with engine.connect() as connection:
        found = study_counts(connection, ["1.1", "1.2"], sop_classes=True)
    assert found["1.1"] == StudyCounts(4, 6, ["CT", "SR"], [CT_IMAGE])
    assert found["1.2"].modalities == sorted(ODD_MODALITIES)


def test_a_read_leaves_no_transaction_open(engine):
    """On PostgreSQL the reading engine runs each statement on its own: no BEGIN before it and
    no ROLLBACK at the connection's return, and no transaction is left open when the connection
    goes back to the pool (a writer's next checkout starts clean)."""
    reader = reading_engine(engine)
    with reader.connect() as connection:
        assert connection.execute(select(studies.c.study_instance_uid)).all()
        if engine.dialect.name == "postgresql":
            from psycopg import pq

            status = connection.connection.dbapi_connection.pgconn.transaction_status
            assert status == pq.TransactionStatus.IDLE  # outside any transaction
    with engine.connect() as connection:  # the same pooled connection, back to transactions
        connection.execute(select(studies.c.study_instance_uid)).all()
        if engine.dialect.name == "postgresql":
            assert connection.connection.dbapi_connection.autocommit is False
