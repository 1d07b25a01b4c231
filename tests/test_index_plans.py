"""The index answers name searches through an index, and an index made by an older version gets
the indexes a newer one declares when the node opens it."""

from __future__ import annotations

from sqlalchemy import inspect, select, text

from dicom_node.index.database import open_engine
from dicom_node.index.query import Level, build_query
from dicom_node.index.schema import studies
from dicom_node.index.statistics import refresh_statistics

NAME_INDEX = "ix_studies_patient_name_folded"


def plan(engine, statement) -> str:
    """The database's plan of `statement`, as text."""
    compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()
            return "\n".join(str(row[-1]) for row in rows)
        connection.exec_driver_sql("SET enable_seqscan = off")  # as on a large index
        return "\n".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {compiled}"))


def test_a_name_prefix_search_uses_the_folded_name_index(database_url):
    engine = open_engine(database_url)
    query = build_query(Level.STUDY, {"PatientName": "müller*"})
    statement = select(studies.c.study_instance_uid).where(*query.conditions)
    assert NAME_INDEX in plan(engine, statement)
    engine.dispose()


def test_an_older_index_gets_the_new_indexes_and_statistics(database_url):
    engine = open_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text(f"DROP INDEX {NAME_INDEX}"))
    engine.dispose()
    engine = open_engine(database_url)
    assert NAME_INDEX in {index["name"] for index in inspect(engine).get_indexes("studies")}
    if engine.dialect.name == "postgresql":
        # Never analysed: all three query tables are; then none until they change.
        assert sorted(refresh_statistics(engine)) == ["instances", "series", "studies"]
        assert refresh_statistics(engine) == []
    engine.dispose()
