"""Query matching over the index (PS3.4 C.2.2.2): the SQL behind C-FIND, C-MOVE and C-GET.

Supported matching: universal (empty), single value, wildcard (`*`, `?`), list of values
(backslash-separated), and range (`A-B`, `A-`, `-B`) for dates and times. ModalitiesInStudy
matches a study when any of its series has one of the modalities. Person names match
case-insensitively (Unicode case folding, `index.folding`); every other value, IDs included,
case-sensitively (C.2.2.2.4), on SQLite as on PostgreSQL (`index.wildcard`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum, StrEnum

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Result,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.sql import FromClause, Select

from ..audit.messages import StudyData, studies_of_instances
from .folding import folded
from .schema import instances, series, studies
from .wildcard import has_wildcard, wildcard_match


class Level(StrEnum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


_DEPTH = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.IMAGE: 3}


class QueryError(ValueError):
    """The identifier cannot be answered: bad level, or matching on an unsupported key."""


class Matching(Enum):
    TEXT = "text"  # wildcard, case-sensitive
    NAME = "name"  # wildcard, case-insensitive (PN)
    UID = "uid"  # single or list, no wildcard
    CODE = "code"  # CS: single, list or wildcard
    DATE = "date"  # single or range
    INTEGER = "integer"


@dataclass(frozen=True)
class Key:
    level: Level
    column: ColumnElement
    matching: Matching
    #: for person names: the folded copy that matching compares
    folded: ColumnElement | None = None


KEYS: dict[str, Key] = {
    "PatientID": Key(Level.PATIENT, studies.c.patient_id, Matching.TEXT),
    "IssuerOfPatientID": Key(Level.PATIENT, studies.c.issuer_of_patient_id, Matching.TEXT),
    "PatientName": Key(
        Level.PATIENT, studies.c.patient_name, Matching.NAME, studies.c.patient_name_folded
    ),
    "PatientBirthDate": Key(Level.PATIENT, studies.c.patient_birth_date, Matching.DATE),
    "PatientSex": Key(Level.PATIENT, studies.c.patient_sex, Matching.CODE),
    "StudyInstanceUID": Key(Level.STUDY, studies.c.study_instance_uid, Matching.UID),
    "StudyDate": Key(Level.STUDY, studies.c.study_date, Matching.DATE),
    "StudyTime": Key(Level.STUDY, studies.c.study_time, Matching.DATE),
    "AccessionNumber": Key(Level.STUDY, studies.c.accession_number, Matching.TEXT),
    "StudyID": Key(Level.STUDY, studies.c.study_id, Matching.TEXT),
    "StudyDescription": Key(Level.STUDY, studies.c.study_description, Matching.TEXT),
    "ReferringPhysicianName": Key(
        Level.STUDY,
        studies.c.referring_physician_name,
        Matching.NAME,
        studies.c.referring_physician_name_folded,
    ),
    "SeriesInstanceUID": Key(Level.SERIES, series.c.series_instance_uid, Matching.UID),
    "Modality": Key(Level.SERIES, series.c.modality, Matching.CODE),
    "SeriesNumber": Key(Level.SERIES, series.c.series_number, Matching.INTEGER),
    "SeriesDescription": Key(Level.SERIES, series.c.series_description, Matching.TEXT),
    "BodyPartExamined": Key(Level.SERIES, series.c.body_part_examined, Matching.CODE),
    "SeriesDate": Key(Level.SERIES, series.c.series_date, Matching.DATE),
    "SeriesTime": Key(Level.SERIES, series.c.series_time, Matching.DATE),
    "SOPInstanceUID": Key(Level.IMAGE, instances.c.sop_instance_uid, Matching.UID),
    "SOPClassUID": Key(Level.IMAGE, instances.c.sop_class_uid, Matching.UID),
    "InstanceNumber": Key(Level.IMAGE, instances.c.instance_number, Matching.INTEGER),
}

#: Attributes computed from the index rather than stored (PS3.4 C.3.4 "optional keys").
COMPUTED: dict[str, Level] = {
    "NumberOfPatientRelatedStudies": Level.PATIENT,
    "NumberOfPatientRelatedSeries": Level.PATIENT,
    "NumberOfPatientRelatedInstances": Level.PATIENT,
    "ModalitiesInStudy": Level.STUDY,
    "SOPClassesInStudy": Level.STUDY,
    "NumberOfStudyRelatedSeries": Level.STUDY,
    "NumberOfStudyRelatedInstances": Level.STUDY,
    "NumberOfSeriesRelatedInstances": Level.SERIES,
}

_INTEGER = re.compile(r"[+-]?[0-9]{1,10}", re.ASCII)

#: Keys that never take part in matching.
NOT_MATCHED = {"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC"}


def _condition(key: Key, value: str) -> ColumnElement | None:
    """The SQL condition for one matching key, or None for universal matching."""
    value = value.strip()
    if value in ("", "*"):
        return None
    column = key.column
    if key.matching is Matching.UID:
        uids = [uid.strip() for uid in value.split("\\") if uid.strip()]
        if not uids:  # only separators: no UID asked for, universal matching
            return None
        return column.in_(uids) if len(uids) > 1 else column == uids[0]
    if key.matching is Matching.INTEGER:
        # IS values (PS3.5 6.2): ASCII digits, within the signed 32 bits the column holds.
        if not _INTEGER.fullmatch(value) or not -(2**31) <= int(value) < 2**31:
            raise QueryError(f"{value!r} is not an integer string (IS)")
        return column == int(value)
    if key.matching is Matching.DATE:
        if "-" in value:
            low, high = (part.strip() for part in value.split("-", 1))
            conditions = [column != ""]
            if low:
                conditions.append(column >= low)
            if high:
                # A time or date given to a coarser precision includes the whole of it.
                conditions.append(column <= high + "\uffff" if len(high) < 8 else column <= high)
            return and_(*conditions)
        return column == value
    values = value.split("\\") if key.matching is Matching.CODE else [value]
    if key.folded is not None:
        column, values = key.folded, [folded(item) for item in values]
    conditions = [
        wildcard_match(column, item) if has_wildcard(item) else column == item for item in values
    ]
    return conditions[0] if len(conditions) == 1 else or_(*conditions)


@dataclass(frozen=True)
class Query:
    """A parsed identifier: the level, its matching conditions and the keys to return."""

    level: Level
    conditions: tuple[ColumnElement, ...]
    modalities: tuple[str, ...]


def build_query(level: Level, identifier: dict[str, str]) -> Query:
    """Parse `identifier` (keyword -> value as text) for a query at `level`.

    Raises QueryError for a matching value on a key the index cannot match at that level.
    """
    conditions = []
    modalities: tuple[str, ...] = ()
    for keyword, value in identifier.items():
        if keyword in NOT_MATCHED or not value.strip() or value.strip() == "*":
            continue
        if keyword == "ModalitiesInStudy" and _DEPTH[level] >= _DEPTH[Level.STUDY]:
            modalities = tuple(item for item in value.split("\\") if item)
            continue
        key = KEYS.get(keyword)
        if key is None or _DEPTH[key.level] > _DEPTH[level]:
            raise QueryError(f"matching on {keyword} is not supported at {level.value} level")
        if "\x00" in value:
            raise QueryError(f"the value of {keyword} holds a NUL character")
        condition = _condition(key, value)
        if condition is not None:
            conditions.append(condition)
    return Query(level, tuple(conditions), modalities)


def _filtered(statement: Select, query: Query) -> Select:
    for condition in query.conditions:
        statement = statement.where(condition)
    if query.modalities:
        statement = statement.where(
            exists().where(
                and_(
                    series.c.study_instance_uid == studies.c.study_instance_uid,
                    series.c.modality.in_(query.modalities),
                )
            )
        )
    return statement


def _base(query: Query) -> Select:
    joined: FromClause
    if query.level is Level.IMAGE:
        joined = instances.join(series).join(studies)
    elif query.level is Level.SERIES:
        joined = series.join(studies)
    else:
        joined = studies
    return select().select_from(joined)


_ORDER = {
    Level.STUDY: (studies.c.study_date, studies.c.study_time, studies.c.study_instance_uid),
    Level.SERIES: (
        series.c.study_instance_uid,
        series.c.series_number,
        series.c.series_instance_uid,
    ),
    Level.IMAGE: (
        instances.c.series_instance_uid,
        instances.c.instance_number,
        instances.c.sop_instance_uid,
    ),
}


@contextmanager
def connection_from(bind: Engine | Connection) -> Iterator[Connection]:
    """`bind` itself when it is a connection (a caller's queries then share one checkout: a
    round trip less each on PostgreSQL, whose pool pings), else one from its pool."""
    if isinstance(bind, Connection):
        yield bind
    else:
        with bind.connect() as connection:
            yield connection


def matching_rows(
    bind: Engine | Connection,
    query: Query,
    limit: int | None = None,
    offset: int = 0,
    ordered: bool = False,
    newest_first: bool = False,
) -> Iterator[dict]:
    """One dict per matching entity: the index columns of its level and the levels above, at
    most `limit`.

    When `ordered` (or with an `offset`) the entities come in a stable order (date, number,
    UID), so that a client can page through them, or in the reverse order when `newest_first`
    (a person looking at a node's recent work); otherwise in the index's order, which spares
    the database a sort of every match.
    """
    columns: list = list(studies.c)
    if query.level is Level.PATIENT:
        statement = _filtered(
            select(
                studies.c.patient_id,
                func.max(studies.c.issuer_of_patient_id).label("issuer_of_patient_id"),
                func.max(studies.c.patient_name).label("patient_name"),
                func.max(studies.c.patient_birth_date).label("patient_birth_date"),
                func.max(studies.c.patient_sex).label("patient_sex"),
            ).select_from(studies),
            query,
        ).group_by(studies.c.patient_id)
    else:
        if query.level in (Level.SERIES, Level.IMAGE):
            columns += list(series.c)
        if query.level is Level.IMAGE:
            columns += list(instances.c)
        statement = _filtered(_base(query).add_columns(*columns), query)
        if ordered or offset or newest_first:
            order = [c.desc() if newest_first else c for c in _ORDER[query.level]]
            statement = statement.order_by(*order).offset(offset)
        statement = statement.limit(limit)
    with connection_from(bind) as connection:
        yield from _dicts(connection.execute(statement))


def _dicts(result: Result) -> Iterator[dict]:
    """The rows of `result` as dicts (column name -> value): zipped with the column names, a
    third cheaper than `dict(row._mapping)` (a WADO-RS series is a row per instance)."""
    names = list(result.keys())
    for row in result:
        yield dict(zip(names, row, strict=True))


#: An instance row with its study's UID and patient, in series and instance order.
_INSTANCES = (
    select(*instances.c, studies.c.study_instance_uid, studies.c.patient_id, studies.c.patient_name)
    .select_from(instances.join(series).join(studies))
    .order_by(instances.c.series_instance_uid, instances.c.instance_number)
)
#: The instances of a study, narrowed (or not) to a series and to one instance, by which of
#: the two are named: built once (WADO-RS asks for these on every request; a viewer loading a
#: series asks for each instance's frames).
_INSTANCES_UNDER = {
    (series_named, instance_named): _INSTANCES.where(
        studies.c.study_instance_uid == bindparam("study"),
        *([series.c.series_instance_uid == bindparam("series")] if series_named else []),
        *([instances.c.sop_instance_uid == bindparam("instance")] if instance_named else []),
    )
    for series_named in (False, True)
    for instance_named in (False, True)
}


def matching_instances(engine: Engine, query: Query) -> list[dict]:
    """The instance rows under every entity matching `query` (for C-MOVE and C-GET), each
    with its study's UID and patient."""
    with engine.connect() as connection:
        return list(_dicts(connection.execute(_filtered(_INSTANCES, query))))


def instances_under(
    engine: Engine, study: str, series_uid: str | None = None, instance: str | None = None
) -> list[dict]:
    """The instance rows (as `matching_instances` gives them) of one study, of one series of
    it (`series_uid`), of one instance (`instance`) or both, the UIDs matched exactly."""
    values = {"study": study, "series": series_uid, "instance": instance}
    statement = _INSTANCES_UNDER[(series_uid is not None, instance is not None)]
    with engine.connect() as connection:
        return list(_dicts(connection.execute(statement, values)))


def studies_of(rows: list[dict]) -> list[StudyData]:
    """The studies of `matching_instances` rows, for an audit message: each with its patient
    and its instances counted by SOP class."""
    return studies_of_instances(
        (row["study_instance_uid"], row["patient_id"], row["patient_name"], row["sop_class_uid"])
        for row in rows
    )


def representative_path(engine: Engine, level: Level, row: dict) -> str | None:
    """Path of one stored instance of the entity, to read attributes the index does not hold."""
    if level is Level.IMAGE:
        return row["path"]
    statement = select(instances.c.path).select_from(instances.join(series).join(studies))
    if level is Level.SERIES:
        statement = statement.where(series.c.series_instance_uid == row["series_instance_uid"])
    elif level is Level.STUDY:
        statement = statement.where(studies.c.study_instance_uid == row["study_instance_uid"])
    else:
        statement = statement.where(studies.c.patient_id == row["patient_id"])
    with engine.connect() as connection:
        return connection.execute(statement.limit(1)).scalar()
