"""The values C-FIND and QIDO-RS compute from the index rather than store (PS3.4 C.3.4):
the series, instance and study counts, the modalities and SOP classes of matching entities,
in grouped queries over all the matches rather than queries per match."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, Row, bindparam, func, select
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import BindParameter

from .query import COMPUTED, Level, connection_from
from .schema import instances, series, studies

#: Most UIDs one grouped count query names (SQLite binds at most 32,766 values).
_CHUNK = 1000


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


@dataclass(frozen=True)
class StudyCounts:
    series: int
    instances: int
    modalities: list[str]
    #: only when asked for (`study_counts(..., sop_classes=True)`)
    sop_classes: list[str]


#: The UIDs (or patient IDs) a grouped count names: one expanding parameter, so that each count
#: statement below is built and compiled once, not per query (SQLAlchemy's construction of a
#: statement costs more than SQLite's answer to it, on every C-FIND and QIDO).
_NAMED: BindParameter[list[str]] = bindparam("named", expanding=True)


def _study_counts(dialect: str) -> Select:
    """Series and instance counts and the distinct modalities of each named study, in one
    statement: the modalities gathered by PostgreSQL's `array_agg`, by SQLite's
    `json_group_array` (the values whole, whatever characters they hold)."""
    gather = func.array_agg if dialect == "postgresql" else func.json_group_array
    return (
        select(
            series.c.study_instance_uid,
            func.count(func.distinct(series.c.series_instance_uid)),
            func.count(instances.c.sop_instance_uid),
            gather(series.c.modality.distinct()),
        )
        .select_from(series.outerjoin(instances))
        .where(series.c.study_instance_uid.in_(_NAMED))
        .group_by(series.c.study_instance_uid)
    )


_STUDY_COUNTS = {dialect: _study_counts(dialect) for dialect in ("postgresql", "sqlite")}
_STUDY_SOP_CLASSES = (
    select(series.c.study_instance_uid, instances.c.sop_class_uid)
    .select_from(series.join(instances))
    .where(series.c.study_instance_uid.in_(_NAMED))
    .distinct()
)
_SERIES_COUNTS = (
    select(instances.c.series_instance_uid, func.count())
    .where(instances.c.series_instance_uid.in_(_NAMED))
    .group_by(instances.c.series_instance_uid)
)
_PATIENT_COUNTS = (
    select(
        studies.c.patient_id,
        func.count(func.distinct(studies.c.study_instance_uid)),
        func.count(func.distinct(series.c.series_instance_uid)),
        func.count(instances.c.sop_instance_uid),
    )
    .select_from(studies.outerjoin(series).outerjoin(instances))
    .where(studies.c.patient_id.in_(_NAMED))
    .group_by(studies.c.patient_id)
)


def study_counts(
    bind: Engine | Connection, uids: list[str], sop_classes: bool = False
) -> dict[str, StudyCounts]:
    """Series and instance counts, modalities (and SOP classes) of many studies, in one (two)
    grouped queries per thousand studies."""
    found: dict[str, StudyCounts] = {}
    with connection_from(bind) as connection:
        statement = _STUDY_COUNTS[connection.dialect.name]
        for chunk in _chunks(uids):
            named = {"named": chunk}
            counts = connection.execute(statement, named).all()
            classes = (
                _distinct_per_study(connection.execute(_STUDY_SOP_CLASSES, named))
                if sop_classes
                else {}
            )
            for uid, n_series, n_instances, modalities in counts:
                if isinstance(modalities, str):  # SQLite's JSON array
                    modalities = json.loads(modalities)
                found[uid] = StudyCounts(
                    n_series,
                    n_instances,
                    sorted(modality for modality in modalities if modality),
                    classes.get(uid, []),
                )
    return found


def _distinct_per_study(pairs: Iterable[Row]) -> dict[str, list[str]]:
    """The distinct (study UID, value) `pairs` as each study's non-empty values, sorted."""
    values: dict[str, list[str]] = {}
    for uid, value in pairs:
        if value:
            values.setdefault(uid, []).append(value)
    return {uid: sorted(found) for uid, found in values.items()}


def series_counts(bind: Engine | Connection, uids: list[str]) -> dict[str, int]:
    """Instance counts of many series, in one grouped query per thousand series."""
    found: dict[str, int] = {}
    with connection_from(bind) as connection:
        for chunk in _chunks(uids):
            found.update(connection.execute(_SERIES_COUNTS, {"named": chunk}).all())
    return found


def patient_counts(bind: Engine | Connection, ids: list[str]) -> dict[str, tuple[int, int, int]]:
    """Studies, series and instances of many patients, in one grouped query per thousand."""
    found: dict[str, tuple[int, int, int]] = {}
    with connection_from(bind) as connection:
        for chunk in _chunks(ids):
            for patient, *numbers in connection.execute(_PATIENT_COUNTS, {"named": chunk}):
                found[patient] = (numbers[0], numbers[1], numbers[2])
    return found


def computed_values(
    bind: Engine | Connection, level: Level, rows: list[dict], keywords: set[str]
) -> list[dict]:
    """Values of the requested computed attributes (counts, modalities) of each result row, in
    grouped queries over all the rows rather than queries per row."""
    wanted = {keyword for keyword in keywords if COMPUTED.get(keyword) is level}
    if not wanted or not rows:
        return [{} for _ in rows]
    values: list[dict] = []
    if level is Level.PATIENT:
        patients = patient_counts(bind, sorted({row["patient_id"] for row in rows}))
        for row in rows:
            n_studies, n_series, n_instances = patients.get(row["patient_id"], (0, 0, 0))
            values.append(
                {
                    "NumberOfPatientRelatedStudies": n_studies,
                    "NumberOfPatientRelatedSeries": n_series,
                    "NumberOfPatientRelatedInstances": n_instances,
                }
            )
    elif level is Level.STUDY:
        counts = study_counts(
            bind,
            sorted({row["study_instance_uid"] for row in rows}),
            sop_classes="SOPClassesInStudy" in wanted,
        )
        empty = StudyCounts(0, 0, [], [])
        for row in rows:
            study = counts.get(row["study_instance_uid"], empty)
            values.append(
                {
                    "NumberOfStudyRelatedSeries": study.series,
                    "NumberOfStudyRelatedInstances": study.instances,
                    "ModalitiesInStudy": study.modalities,
                    "SOPClassesInStudy": study.sop_classes,
                }
            )
    else:
        numbers = series_counts(bind, sorted({row["series_instance_uid"] for row in rows}))
        values = [
            {"NumberOfSeriesRelatedInstances": numbers.get(row["series_instance_uid"], 0)}
            for row in rows
        ]
    return [{keyword: value[keyword] for keyword in wanted} for value in values]
