"""Taking an instance back out of the index, with the series and study it leaves empty."""

from __future__ import annotations

from sqlalchemy import Connection, and_, delete, exists

from .schema import instances, jobs, series, studies


def remove_instance(connection: Connection, sop_instance_uid: str, path: str) -> bool:
    """Delete the instance row if it still points at `path`; return whether it did."""
    series_uid = connection.execute(
        delete(instances)
        .where(and_(instances.c.sop_instance_uid == sop_instance_uid, instances.c.path == path))
        .returning(instances.c.series_instance_uid)
    ).scalar()
    if series_uid is None:
        return False
    study_uid = connection.execute(
        delete(series)
        .where(
            and_(
                series.c.series_instance_uid == series_uid,
                ~exists().where(instances.c.series_instance_uid == series_uid),
            )
        )
        .returning(series.c.study_instance_uid)
    ).scalar()
    if study_uid is not None:
        connection.execute(
            delete(studies).where(
                and_(
                    studies.c.study_instance_uid == study_uid,
                    ~exists().where(series.c.study_instance_uid == study_uid),
                    ~exists().where(jobs.c.study_instance_uid == study_uid),
                )
            )
        )
    return True
