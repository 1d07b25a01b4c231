"""QIDO-RS (PS3.18 10.6): searches answered from the index as DICOM JSON.

Matching follows C-FIND (`index.query`): wildcards on PatientName (case-insensitive), date
ranges, UID lists (comma or backslash), ModalitiesInStudy. Each level's required return
attributes (PS3.18 Table 10.6.3-3) come from the index, counts from grouped queries; other
attributes named by `includefield` are read from one stored instance of each result. No match
is `200 []` (CP-2473). More results than `max_results` are cut with a `Warning: 299` header.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from sqlalchemy import Connection

from ..audit import messages, record_soon
from ..index.counts import series_counts, study_counts
from ..index.query import (
    COMPUTED,
    KEYS,
    Level,
    Matching,
    QueryError,
    build_query,
    connection_from,
    matching_rows,
)
from ..store.representative import representative_header
from . import params
from .context import DicomwebContext, http_user, service_url
from .errors import DicomwebError
from .json_model import DICOM_JSON, dump, element, tag_key

log = logging.getLogger(__name__)

_STUDY = [
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDescription",
]
_SERIES = [
    "Modality",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
]
_INSTANCE = ["SOPClassUID", "SOPInstanceUID", "InstanceNumber"]
#: index columns of instances that are not matching keys
_INSTANCE_GEOMETRY = {
    "Rows": "rows",
    "Columns": "columns",
    "BitsAllocated": "bits_allocated",
    "NumberOfFrames": "number_of_frames",
}
_CONTROL = {"limit", "offset", "includefield", "fuzzymatching", "orderby"}
_DATE_VALUE = re.compile(r"^[0-9.]*(-[0-9.]*)?$")
_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")


def _keyword(name: str) -> str:
    """An attribute named by keyword or by tag (ggggeeee); DicomwebError if unknown."""
    if _HEX_TAG.match(name):
        keyword = keyword_for_tag(int(name, 16))
    else:
        keyword = name if tag_for_keyword(name) is not None else ""
    if not keyword:
        raise DicomwebError(400, f"unknown attribute {name!r} in the query")
    return keyword


def _integer(request: Request, name: str) -> int | None:
    text = request.query_params.get(name)
    return None if text is None else params.integer(text, name)


class Search:
    """One parsed QIDO-RS request."""

    def __init__(self, request: Request, level: Level, fixed: dict[str, str]) -> None:
        self.level = level
        self.matching: dict[str, str] = {}
        self.included: set[str] = set()
        self.include_all = False
        self.warnings: list[str] = []
        for name, value in request.query_params.multi_items():
            if name == "includefield":
                for item in filter(None, (part.strip() for part in value.split(","))):
                    if item == "all":
                        self.include_all = True
                    else:
                        self.included.add(_keyword(item))
            elif name == "fuzzymatching":
                if value.lower() == "true":
                    self.warnings.append("fuzzymatching is not supported: matching is exact")
            elif name == "orderby":
                self.warnings.append("orderby is not supported: results are in index order")
            elif name not in _CONTROL:
                if "." in name:
                    raise DicomwebError(400, f"matching in sequences ({name}) is not supported")
                self._add_matching(_keyword(name), value)
        self.matching.update(fixed)
        self.limit = _integer(request, "limit")
        self.offset = _integer(request, "offset") or 0

    def _add_matching(self, keyword: str, value: str) -> None:
        key = KEYS.get(keyword)
        if key is not None and key.matching is Matching.UID:
            value = value.replace(",", "\\")
        if key is not None and key.matching is Matching.DATE and not _DATE_VALUE.match(value):
            raise DicomwebError(400, f"{keyword}={value!r} is not a date, time or range")
        if keyword in self.matching:
            raise DicomwebError(400, f"{keyword} is given twice")
        self.matching[keyword] = value


def _levels_shown(level: Level, fixed: dict[str, str]) -> list[Level]:
    """Levels whose attributes an answer carries: its own, and the levels above it that the
    URL does not already fix (PS3.18 Table 10.6.3-3)."""
    shown = [level]
    if level is Level.SERIES and "StudyInstanceUID" not in fixed:
        shown.append(Level.STUDY)
    if level is Level.IMAGE:
        if "SeriesInstanceUID" not in fixed:
            shown.append(Level.SERIES)
        if "StudyInstanceUID" not in fixed:
            shown.append(Level.STUDY)
    return shown


def search(context: DicomwebContext, request: Request, level: Level, **fixed: str) -> Response:
    """The answer to one search; its audit message is on disk before any answer leaves (it is
    synced while the index answers)."""
    user = http_user(request, messages.SOURCE)
    synced = record_soon(
        messages.query(user, request.url.path, messages.URI, request.url.query.encode())
    )
    try:
        return _search(context, request, level, fixed)
    finally:
        synced()


def _search(
    context: DicomwebContext, request: Request, level: Level, fixed: dict[str, str]
) -> Response:
    parsed = Search(request, level, fixed)
    try:
        query = build_query(level, parsed.matching)
    except QueryError as error:
        raise DicomwebError(400, str(error)) from None
    cap = context.settings.max_results
    wanted = cap if parsed.limit is None else min(parsed.limit, cap)
    # Sorted only for a client that pages: a plain search takes the matches as they come.
    paging = parsed.limit is not None or parsed.offset > 0
    shown = _levels_shown(level, fixed)
    with connection_from(context.engine) as connection:  # one checkout for matches and counts
        rows = list(
            matching_rows(connection, query, limit=wanted + 1, offset=parsed.offset, ordered=paging)
        )
        if len(rows) > wanted:
            rows = rows[:wanted]
            if parsed.limit is None or parsed.limit > cap:
                parsed.warnings.append(
                    f"more than {cap} results: page through them with limit and offset"
                )
        counts = _Counts(connection, rows, shown)
    answers = _answers(context, request, parsed, rows, shown, counts)
    log.info("QIDO-RS %s search: %d result(s)", level.value.lower(), len(answers))
    headers = {"Warning": ", ".join(f'299 dicom-node: "{text}"' for text in parsed.warnings)}
    return Response(
        dump(answers), media_type=DICOM_JSON, headers=headers if parsed.warnings else None
    )


class _Counts:
    """The study and series counts of the results, for the levels the answers show."""

    def __init__(self, connection: Connection, rows: list[dict], shown: list[Level]) -> None:
        self.studies = (
            study_counts(connection, sorted({row["study_instance_uid"] for row in rows}))
            if Level.STUDY in shown
            else {}
        )
        self.series = (
            series_counts(connection, sorted({row["series_instance_uid"] for row in rows}))
            if Level.SERIES in shown
            else {}
        )


def _answers(
    context: DicomwebContext,
    request: Request,
    parsed: Search,
    rows: list[dict],
    shown: list,
    counts: _Counts,
) -> list[dict]:
    base = service_url(request)
    keywords = {Level.STUDY: list(_STUDY), Level.SERIES: list(_SERIES), Level.IMAGE: _INSTANCE}
    if parsed.include_all:
        for keyword, key in KEYS.items():
            level = Level.STUDY if key.level is Level.PATIENT else key.level
            if level in shown and keyword not in keywords[level]:
                keywords[level] = [*keywords[level], keyword]
    from_index = {keyword for level in shown for keyword in keywords[level]}
    extra = sorted(
        keyword
        for keyword in parsed.included
        if keyword not in from_index
        and keyword not in _INSTANCE_GEOMETRY
        and (keyword not in COMPUTED or COMPUTED[keyword] not in shown)
    )
    answers = []
    for row in rows:
        answer: dict[str, dict] = {}
        for level in shown:
            for keyword in keywords[level]:
                answer[tag_key(keyword)] = element(keyword, row[KEYS[keyword].column.name])
        study_uid = row["study_instance_uid"]
        url = f"{base}/studies/{study_uid}"
        if Level.STUDY in shown:
            study = counts.studies.get(study_uid)
            answer[tag_key("ModalitiesInStudy")] = element(
                "ModalitiesInStudy", study.modalities if study else []
            )
            answer[tag_key("NumberOfStudyRelatedSeries")] = element(
                "NumberOfStudyRelatedSeries", study.series if study else 0
            )
            answer[tag_key("NumberOfStudyRelatedInstances")] = element(
                "NumberOfStudyRelatedInstances", study.instances if study else 0
            )
        if Level.SERIES in shown:
            answer[tag_key("NumberOfSeriesRelatedInstances")] = element(
                "NumberOfSeriesRelatedInstances", counts.series.get(row["series_instance_uid"], 0)
            )
        if parsed.level is not Level.STUDY:
            url += f"/series/{row['series_instance_uid']}"
            answer[tag_key("StudyInstanceUID")] = element("StudyInstanceUID", study_uid)
        if parsed.level is Level.IMAGE:
            url += f"/instances/{row['sop_instance_uid']}"
            answer[tag_key("SeriesInstanceUID")] = element(
                "SeriesInstanceUID", row["series_instance_uid"]
            )
            for keyword, column in _INSTANCE_GEOMETRY.items():
                answer[tag_key(keyword)] = element(keyword, row[column])
        answer[tag_key("RetrieveURL")] = element("RetrieveURL", url)
        answer[tag_key("InstanceAvailability")] = element("InstanceAvailability", "ONLINE")
        if extra:
            _add_from_file(context, parsed.level, row, extra, answer)
        if any(
            not str(item).isascii() for value in answer.values() for item in value.get("Value", [])
        ):
            answer[tag_key("SpecificCharacterSet")] = element("SpecificCharacterSet", "ISO_IR 192")
        answers.append(dict(sorted(answer.items())))
    return answers


def _add_from_file(
    context: DicomwebContext, level: Level, row: dict, keywords: list[str], answer: dict
) -> None:
    """Attributes the index does not hold, read from one stored instance of the result."""
    stored = representative_header(context.engine, context.storage, level, row)
    for keyword in keywords:
        if keyword in COMPUTED:
            continue  # a count of a level this answer does not show
        value = None
        if stored is not None and keyword in stored:
            try:
                # Binary values are inlined: a search names them only when it wants them.
                value = stored[keyword].to_json_dict(None, 2**31)
            except (RecursionError, ValueError) as error:
                # A crafted or damaged file (e.g. sequences nested deeper than pydicom reads):
                # the match is still answered, this attribute without its value.
                log.warning(
                    "QIDO-RS: %s of %s cannot be read: %s",
                    keyword,
                    row.get("sop_instance_uid") or row.get("study_instance_uid"),
                    type(error).__name__,
                )
        answer[tag_key(keyword)] = value or {"vr": dictionary_VR(keyword)}


def router(context: DicomwebContext) -> APIRouter:
    routes = APIRouter(tags=["QIDO-RS"])
    json_response: dict[int | str, dict[str, Any]] = {
        200: {"content": {DICOM_JSON: {}}, "description": "matches"}
    }

    @routes.get("/studies", responses=json_response, response_class=Response)
    def search_for_studies(request: Request) -> Response:
        """Studies matching the query parameters."""
        return search(context, request, Level.STUDY)

    @routes.get("/series", responses=json_response, response_class=Response)
    def search_for_all_series(request: Request) -> Response:
        """Series of any study."""
        return search(context, request, Level.SERIES)

    @routes.get("/instances", responses=json_response, response_class=Response)
    def search_for_all_instances(request: Request) -> Response:
        """Instances of any study."""
        return search(context, request, Level.IMAGE)

    @routes.get("/studies/{study}/series", responses=json_response, response_class=Response)
    def search_for_series(study: str, request: Request) -> Response:
        """Series of one study."""
        return search(context, request, Level.SERIES, StudyInstanceUID=study)

    @routes.get("/studies/{study}/instances", responses=json_response, response_class=Response)
    def search_for_study_instances(study: str, request: Request) -> Response:
        """Instances of one study."""
        return search(context, request, Level.IMAGE, StudyInstanceUID=study)

    @routes.get(
        "/studies/{study}/series/{series}/instances",
        responses=json_response,
        response_class=Response,
    )
    def search_for_instances(study: str, series: str, request: Request) -> Response:
        """Instances of one series."""
        return search(
            context, request, Level.IMAGE, StudyInstanceUID=study, SeriesInstanceUID=series
        )

    return routes
