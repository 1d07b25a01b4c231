"""What the jobs and crash recovery ask of the index about stored instances: a study's received
series with their files, which results exist already, the series of a study with their counts,
and the rows written last before a crash."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from .removal import remove_instance
from .rows import OwnInstance, SeriesCount, SeriesFiles, StoredFile
from .schema import instances, series


def received_series(engine: Engine, study_uid: str, own_ae_title: str) -> list[SeriesFiles]:
    """The study's series as received (the node's own results left out, they are not sources
    for models or research), each with its files in instance order, series in number order."""
    statement = (
        select(instances.c.series_instance_uid, instances.c.path)
        .join(series, series.c.series_instance_uid == instances.c.series_instance_uid)
        .where(series.c.study_instance_uid == study_uid)
        .where(instances.c.calling_ae_title != own_ae_title)
        .order_by(
            series.c.series_number, instances.c.series_instance_uid, instances.c.instance_number
        )
    )
    grouped: dict[str, list[str]] = {}
    with engine.connect() as connection:
        for series_uid, relative in connection.execute(statement):
            grouped.setdefault(series_uid, []).append(relative)
    return [SeriesFiles(uid, paths) for uid, paths in grouped.items()]


def own_instances(engine: Engine, study_uid: str, own_ae_title: str) -> list[OwnInstance]:
    """The node's own results in the study (what ``received_series`` leaves out), by series
    number."""
    statement = (
        select(
            instances.c.sop_instance_uid,
            instances.c.sop_class_uid,
            series.c.series_number,
            instances.c.path,
        )
        .join(series, series.c.series_instance_uid == instances.c.series_instance_uid)
        .where(series.c.study_instance_uid == study_uid)
        .where(instances.c.calling_ae_title == own_ae_title)
        .order_by(series.c.series_number, instances.c.instance_number)
    )
    with engine.connect() as connection:
        return [OwnInstance(*row) for row in connection.execute(statement)]


def indexed_uids(engine: Engine, uids: list[str]) -> set[str]:
    """Those of ``uids`` that are stored instances."""
    with engine.connect() as connection:
        return set(
            connection.execute(
                select(instances.c.sop_instance_uid).where(instances.c.sop_instance_uid.in_(uids))
            ).scalars()
        )


def instance_path(engine: Engine, uid: str) -> str:
    """The stored file (relative to the storage area) of the instance ``uid``."""
    with engine.connect() as connection:
        return connection.execute(
            select(instances.c.path).where(instances.c.sop_instance_uid == uid)
        ).scalar_one()


def study_series(engine: Engine, study_uid: str) -> list[SeriesCount]:
    """The study's series as the index holds them (results included), with their counts."""
    statement = (
        select(
            series.c.series_instance_uid,
            series.c.series_number,
            series.c.modality,
            series.c.series_description,
            func.count(instances.c.sop_instance_uid),
        )
        .join(instances, instances.c.series_instance_uid == series.c.series_instance_uid)
        .where(series.c.study_instance_uid == study_uid)
        .group_by(
            series.c.series_instance_uid,
            series.c.series_number,
            series.c.modality,
            series.c.series_description,
        )
        .order_by(series.c.series_number, series.c.series_instance_uid)
    )
    with engine.connect() as connection:
        return [SeriesCount(*row) for row in connection.execute(statement)]


def latest_received_at(engine: Engine) -> float | None:
    """When the newest instance was indexed; None for an empty index."""
    with engine.connect() as connection:
        return connection.execute(select(func.max(instances.c.received_at))).scalar()


def files_received_since(engine: Engine, since: float) -> list[StoredFile]:
    """The instances indexed at or after ``since``, with the file size each row promises."""
    columns = (instances.c.sop_instance_uid, instances.c.path, instances.c.size)
    with engine.connect() as connection:
        rows = connection.execute(select(*columns).where(instances.c.received_at >= since))
        return [StoredFile(*row) for row in rows]


def paths_received_since(engine: Engine, since: float) -> set[str]:
    """The files of the instances indexed at or after ``since``."""
    with engine.connect() as connection:
        return set(
            connection.execute(
                select(instances.c.path).where(instances.c.received_at >= since)
            ).scalars()
        )


def remove_instances(engine: Engine, stored: list[StoredFile]) -> None:
    """Take these instances out of the index (each only if its row still names its file)."""
    with engine.begin() as connection:
        for item in stored:
            remove_instance(connection, item.sop_instance_uid, item.path)
